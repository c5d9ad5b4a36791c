"""LLaVA-OneVision presets: SigLIP-so400m-384 with Qwen2 (0.5B / 7B), anyres_max_9."""

from __future__ import annotations

from typing import Any

from transformers import LlavaOnevisionConfig, LlavaOnevisionProcessor, SiglipVisionConfig
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

from hired.backends.hf.processors import without_video_processor
from hired.presets.base import FamilyPresets, Preset, qwen2, tiny_vision

# SigLIP-so400m-patch14-384 as LLaVA-OneVision uses it (26 layers, no CLS token, no head).
SIGLIP_384 = dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                  num_attention_heads=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
# anyres_max_9's pinpoints: every grid of 1..6 x 1..6 crops of 384 px.
ONEVISION_PINPOINTS = [[384 * r, 384 * c] for r in range(1, 7) for c in range(1, 7)]
TOKENS = {"image_token": "<image>", "video_token": "<video>"}  # its processor counts video tokens too


def processor(tokenizer: Any, crop: int = 384, patch: int = 14, pinpoints: list[list[int]] | None = None) -> Any:
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": crop, "width": crop},
                                                      image_grid_pinpoints=pinpoints or ONEVISION_PINPOINTS)
    return without_video_processor(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
        num_image_tokens=(crop // patch) ** 2, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9")


def config(preset: Preset, tokenizer: Any) -> Any:
    return LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**preset.vision), text_config=preset.text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_aspect_ratio="anyres_max_9", projector_hidden_act="gelu", tie_word_embeddings=False, **preset.extra,
    )


RECORD = FamilyPresets("llava_onevision", TOKENS, processor, config, {
    "llava-onevision-qwen2-0.5b": Preset(
        "llava_onevision", SIGLIP_384, qwen2(896, 4864, 24, 14, 2, vocab=152000, rope_theta=1e6),
        "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"),
    "llava-onevision-qwen2-7b": Preset(
        "llava_onevision", SIGLIP_384, qwen2(3584, 18944, 28, 28, 4, vocab=152128, rope_theta=1e6),
        "llava-hf/llava-onevision-qwen2-7b-ov-hf"),
    "tiny-llava-onevision": Preset("llava_onevision", tiny_vision(SIGLIP_384), qwen2(64, 128, 2, 4, 2, vocab=0)),
}, "tiny-llava-onevision")
