"""The plugin under vLLM's offline engine (LLM.generate) against vanilla vLLM and against hired
on HF transformers, on the demo model."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import IMAGE_TOKEN, MIN_QUESTIONS, demo_dir

import hired


def scene_prompts(prompts):
    return [i for i, p in enumerate(prompts) if p["answer"] is not None]


def test_unconfigured_plugin_is_bit_identical_to_vanilla_vllm(vanilla, plugin, prompts):
    """Same prompt ids, generated ids and top-5 logprobs (floats compared exactly)."""
    mine = plugin["unconfigured"]["outputs"]
    assert len(mine) == len(vanilla["outputs"]) == len(prompts)
    for a, b in zip(vanilla["outputs"], mine):
        assert a["prompt_ids"] == b["prompt_ids"]
        assert a["ids"] == b["ids"]
        assert a["logprobs"] == b["logprobs"]


def test_budget_1_equals_vanilla_vllm_and_hf(vanilla, plugin, hf_full, prompts):
    full = plugin["budget-1.0"]["outputs"]
    for p, v, h, f in zip(prompts, vanilla["outputs"], hf_full, full):
        assert f["prompt_ids"] == v["prompt_ids"], p
        assert f["ids"] == v["ids"], p
        assert [t for t in f["ids"] if t != 3] == h["ids"], p  # HF: EOS stripped
        assert len(f["prompt_ids"]) == h["prompt_len"]


def same_answers_and_masks(run: dict, hf: list[dict], prompts: list[dict]) -> None:
    idx = scene_prompts(prompts)
    assert len(idx) >= MIN_QUESTIONS >= 50
    differ = [prompts[i]["text"] for i in idx if [t for t in run["outputs"][i]["ids"] if t != 3] != hf[i]["ids"]]
    assert not differ
    # the same tokens kept: the worker's keep masks (one per distinct picture: vLLM encodes a
    # picture once and caches it) are HF's, as multisets of (size, mask)
    vllm_masks = Counter((tuple(r["image_size"]), str(r["keep_mask"])) for r in run["reports"])
    hf_masks = Counter()
    seen = set()
    for p, h in zip(prompts, hf):
        if p["image"] not in seen:
            seen.add(p["image"])
            hf_masks[(tuple(h["size"]), str(h["keep_mask"]))] += 1
    assert vllm_masks == hf_masks


def test_budget_02_same_answers_and_selection_as_hired_on_hf(plugin, hf_hired_02, prompts):
    same_answers_and_masks(plugin["budget-0.2"], hf_hired_02, prompts)


def test_merging_policy_visionzip_02_same_as_on_hf(plugin, hf_visionzip_02, prompts):
    """VisionZip merges the vision features before the projector, in vLLM as in transformers."""
    same_answers_and_masks(plugin["visionzip-0.2"], hf_visionzip_02, prompts)


@pytest.mark.parametrize("run_name, config", [
    ("budget-0.2", hired.HiREDConfig(budget=0.2, newlines="all")),
    ("budget-1.0", hired.HiREDConfig(budget=1.0, newlines="all")),
    ("visionzip-0.2", hired.HiREDConfig(budget=0.2, newlines="all", method="visionzip")),
])
def test_prompt_image_tokens_equal_planned_tokens(plugin, hf_full, prompts, run_name, config):
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(demo_dir())
    sizes = set()
    for p, out, h in zip(prompts, plugin[run_name]["outputs"], hf_full):
        planned = hired.planned_tokens(model_config, tuple(p["size"]), config)
        image_tokens = sum(t == IMAGE_TOKEN for t in out["prompt_ids"])
        assert image_tokens == planned, p
        assert len(out["prompt_ids"]) == h["prompt_len"] - h["image_tokens"] + planned
        sizes.add(round(p["size"][1] / p["size"][0], 2))
    assert len(sizes) >= 8  # five scene aspect ratios and the odd sizes
    for r in plugin[run_name]["reports"]:
        assert r["llm_tokens"] == hired.planned_tokens(model_config, tuple(r["image_size"]), config)


def test_budget_02_cuts_the_prompt(plugin, hf_full, prompts):
    for out, h in zip(plugin["budget-0.2"]["outputs"], hf_full):
        assert len(out["prompt_ids"]) < h["prompt_len"]
