"""The plugin's LLaVA-1.5 class under vLLM: a small random-weight LLaVA-1.5 (CLIP ViT with the
demo's 112 px crops, one crop of 64 tokens, no newlines) saved by transformers, loaded as saved.
Random weights answer nothing useful, so what is compared is the selection and the counts."""

from __future__ import annotations

import pytest
from conftest import run_engines

import hired


@pytest.fixture(scope="session")
def llava15(work):
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    from hired.presets import build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=112, patch_size=14, hidden_size=64, intermediate_size=128,
                                       num_hidden_layers=3, num_attention_heads=4, projection_dim=32,
                                       hidden_act="quick_gelu", initializer_factor=4.0),
        text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=32, vocab_size=len(tokenizer),
                         max_position_embeddings=1024),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    path = work / "llava15"
    LlavaForConditionalGeneration(config).save_pretrained(path)
    build_processor("llava", tokenizer, crop=112, patch=14).save_pretrained(path)
    return path


def test_llava15_selection_and_counts_match_hf(work, llava15, prompts):
    from conftest import hf_generate

    picks = prompts[::7]
    config = hired.HiREDConfig(budget=0.2, newlines="all")
    hf = hf_generate(str(llava15), picks, config, max_new_tokens=2)
    runs = run_engines(work, "llava15", str(llava15), picks, [
        {"name": "unconfigured"}, {"name": "budget-0.2", "hf_overrides": {"hired_budget": 0.2}}], plugin=True)
    image_token = hired.presets.build_tokenizer().convert_tokens_to_ids("<image>")
    for out in runs["unconfigured"]["outputs"]:
        assert sum(t == image_token for t in out["prompt_ids"]) == 64
    for out, h in zip(runs["budget-0.2"]["outputs"], hf):
        assert sum(t == image_token for t in out["prompt_ids"]) == 13 == h["llm_tokens"]
        assert len(out["ids"]) > 0
    masks = sorted(str(r["keep_mask"]) for r in runs["budget-0.2"]["reports"])
    assert masks == sorted({str(h["keep_mask"]) for h in hf}) and len(masks) == len({p["image"] for p in picks})
