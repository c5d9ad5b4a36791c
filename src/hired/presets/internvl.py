"""InternVL presets: InternViT-300M-448px with Qwen2.5 (InternVL3 1B / 8B, "-hf" checkpoints)."""

from __future__ import annotations

from typing import Any

from transformers import InternVLConfig, InternVLProcessor, InternVLVisionConfig
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

from hired.backends.hf.processors import processor_with_image_sizes, without_video_processor
from hired.presets.base import FamilyPresets, Preset, qwen2, tiny_vision

# InternViT-300M-448px (InternVL 2.5 / 3 1B-8B): 448 px tiles, patch 14, CLS token, no qk norm.
INTERNVIT_300M = dict(
    model_type="internvl_vision", image_size=448, patch_size=14, hidden_size=1024, intermediate_size=4096,
    num_hidden_layers=24, num_attention_heads=16, attention_bias=True, use_qk_norm=False, norm_type="layer_norm",
    layer_norm_eps=1e-6, layer_scale_init_value=0.1, use_mean_pooling=True, hidden_act="gelu",
)
# InternVL's image-token strings (the real tokenizer's).
TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
          "video_token": "<video>"}


def processor(tokenizer: Any, crop: int = 448, patch: int = 14, max_tiles: int = 12,
              crop_to_patches: bool = True) -> Any:
    """InternVL's processor (returning ``image_sizes``). ``crop_to_patches=False`` saves the image
    processor as the real "-hf" checkpoints do (InternVL's processor crops on every call anyway)."""
    image_processor = GotOcr2ImageProcessorPil(size={"height": crop, "width": crop}, crop_to_patches=crop_to_patches,
                                               min_patches=1, max_patches=max_tiles)
    base = without_video_processor(InternVLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
        image_seq_length=(crop // patch // 2) ** 2)
    return processor_with_image_sizes(base)


def config(preset: Preset, tokenizer: Any) -> Any:
    vision = {k: v for k, v in preset.vision.items() if k != "model_type"}
    return InternVLConfig(
        vision_config=InternVLVisionConfig(**vision), text_config=preset.text,
        image_token_id=tokenizer.convert_tokens_to_ids(TOKENS["context_image_token"]), downsample_ratio=0.5,
        vision_feature_layer=-1, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        tie_word_embeddings=False, **preset.extra,
    )


RECORD = FamilyPresets("internvl", TOKENS, processor, config, {
    "internvl3-1b": Preset("internvl", INTERNVIT_300M, qwen2(896, 4864, 24, 14, 2), "OpenGVLab/InternVL3-1B-hf"),
    "internvl3-8b": Preset("internvl", INTERNVIT_300M, qwen2(3584, 18944, 28, 28, 4), "OpenGVLab/InternVL3-8B-hf"),
    # Real geometry (448 px tiles, patch 14, 256 tokens per tile, up to 12 tiles), tiny widths and depths.
    "tiny-internvl": Preset("internvl", tiny_vision(INTERNVIT_300M), qwen2(64, 128, 2, 4, 2, vocab=0)),
}, "tiny-internvl", placeholder=TOKENS["context_image_token"])
