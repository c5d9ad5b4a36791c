"""LLaVA-NeXT and LLaVA-1.5 presets: CLIP ViT-L/14-336 with a Llama / Mistral language model."""

from __future__ import annotations

from typing import Any

from transformers import CLIPVisionConfig, LlavaConfig, LlavaNextConfig, LlavaNextProcessor, LlavaProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from hired.presets.base import FamilyPresets, Preset, llama, tiny_vision

# LLaVA-v1.6's anyres resolutions (height, width) and CLIP ViT-L/14-336.
GRID_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CLIP_L_336 = dict(
    image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
    num_hidden_layers=24, num_attention_heads=16, projection_dim=768, hidden_act="quick_gelu",
)
TOKENS = {"image_token": "<image>"}


def processor(tokenizer: Any, crop: int = 336, patch: int = 14, pinpoints: list[list[int]] | None = None,
              anyres: bool = True) -> Any:
    common = dict(size={"shortest_edge": crop}, crop_size={"height": crop, "width": crop})
    if anyres:
        image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=pinpoints or GRID_PINPOINTS, **common)
        cls = LlavaNextProcessor
    else:
        image_processor, cls = CLIPImageProcessorPil(**common), LlavaProcessor
    return cls(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
               vision_feature_select_strategy="default", num_additional_image_tokens=1)


def config(preset: Preset, tokenizer: Any, anyres: bool = True) -> Any:
    common = dict(
        vision_config=CLIPVisionConfig(**preset.vision), text_config=preset.text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", tie_word_embeddings=False,
        **preset.extra,
    )
    return LlavaNextConfig(image_grid_pinpoints=GRID_PINPOINTS, **common) if anyres else LlavaConfig(**common)


RECORD = FamilyPresets("llava_next", TOKENS, processor, config, {
    "llava-next-vicuna-7b": Preset("llava_next", CLIP_L_336, llama(4096, 11008, 32, 32),
                                   "llava-hf/llava-v1.6-vicuna-7b-hf"),
    "llava-next-mistral-7b": Preset(
        "llava_next", CLIP_L_336,
        dict(llama(4096, 14336, 32, 32, kv=8, rope_theta=1e6), model_type="mistral", max_position_embeddings=32768,
             sliding_window=None),
        "llava-hf/llava-v1.6-mistral-7b-hf"),
    "llava-next-13b": Preset("llava_next", CLIP_L_336, llama(5120, 13824, 40, 40), "llava-hf/llava-v1.6-vicuna-13b-hf"),
    # Real geometry (336px crops, patch 14, 576 tokens, real pinpoints), tiny widths and depths.
    "tiny-llava-next": Preset("llava_next", tiny_vision(CLIP_L_336), llama(64, 128, 2, 4, vocab=0)),
}, "tiny-llava-next")

LLAVA_RECORD = FamilyPresets(
    "llava", TOKENS,
    lambda tokenizer, **geometry: processor(tokenizer, anyres=False, **geometry),
    lambda preset, tokenizer: config(preset, tokenizer, anyres=False), {
        "llava-1.5-7b": Preset("llava", CLIP_L_336, llama(4096, 11008, 32, 32), "llava-hf/llava-1.5-7b-hf"),
        "tiny-llava": Preset("llava", tiny_vision(CLIP_L_336), llama(64, 128, 2, 4, vocab=0)),
    }, "tiny-llava")
