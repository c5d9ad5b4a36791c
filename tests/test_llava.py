"""LLaVA-1.5 / ShareGPT4V: one partition, phase 2 only."""

import pytest
import torch
from conftest import noise_image

import hired
from hired import HiREDConfig


def make_inputs(processor, images):
    return dict(processor(images=images, text=["<image>\nwhat is the color"] * len(images), return_tensors="pt"))


@pytest.mark.parametrize("budget, kept", [(0.2, 115), (1, 1), (64, 64), (1.0, 576)])
def test_single_partition_keeps_the_budget_by_final_layer_attention(tiny_llava, budget, kept):
    model, processor = tiny_llava
    inputs = make_inputs(processor, [noise_image(300, 300, 1), noise_image(500, 200, 2)])
    hired.apply(model, HiREDConfig(budget=budget))
    try:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        report = model.hired_report
        assert [r.kept for r in report.images] == [kept, kept]
        assert report.llm_image_tokens == 2 * kept
        assert out.shape[1] == inputs["input_ids"].shape[1] + 3
        assert all(r.partitions == 1 and r.newline_tokens == 0 for r in report.images)
    finally:
        hired.remove(model)
