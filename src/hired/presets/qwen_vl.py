"""Qwen2.5-VL (3B / 7B) and Qwen3-VL (2B / 8B) presets: the checkpoints' vision and text shapes
and their image processor settings (``preprocessor_config.json``: min / max pixels, patch 14 or
16, merge 2, temporal patch 2, mean / std), with a local tokenizer."""

from __future__ import annotations

from typing import Any

from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen3VLConfig, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from hired.backends.hf.processors import without_video_processor
from hired.presets.base import FamilyPresets, Preset

TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
          "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"  # the chat template's image, expanded by the processor
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

# Qwen2.5-VL's ViT (3B and 7B share it): 32 blocks, full attention at 7, 15, 23, 31, windows of 112 px.
QWEN25_VIT = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, hidden_act="silu", patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                  tokens_per_second=2, in_channels=3)
# Qwen3-VL's ViTs: 2B (24 blocks, deepstack 5, 11, 17) and 8B (27 blocks, deepstack 8, 16, 24), patch 16.
QWEN3_VIT_2B = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, hidden_act="gelu_pytorch_tanh",
                    patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                    deepstack_visual_indexes=[5, 11, 17], in_channels=3)
QWEN3_VIT_8B = dict(QWEN3_VIT_2B, depth=27, hidden_size=1152, intermediate_size=4304,
                    deepstack_visual_indexes=[8, 16, 24])
TINY = dict(hidden_size=32, intermediate_size=64, num_heads=4, depth=4)


def text(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, theta: float, section: list[int],
         **kw: Any) -> dict:
    return dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, vocab_size=vocab, max_position_embeddings=128000, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": section}, **kw)


def text3(*args: Any, **kw: Any) -> dict:
    """Qwen3-VL's text config: as :func:`text`, mRoPE interleaved (the checkpoints' key)."""
    out = text(*args, **kw)
    out["rope_parameters"]["mrope_interleaved"] = True
    return out


def processor_25(tokenizer: Any, min_pixels: int = 3136, max_pixels: int = 12845056, patch: int = 14) -> Any:
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch,
                                               merge_size=2, temporal_patch_size=2, image_mean=CLIP_MEAN,
                                               image_std=CLIP_STD)
    return without_video_processor(Qwen2_5_VLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                                         video_processor=None)


def processor_3(tokenizer: Any, min_pixels: int = 65536, max_pixels: int = 16777216, patch: int = 16) -> Any:
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                                               patch_size=patch, merge_size=2, temporal_patch_size=2,
                                               image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return without_video_processor(Qwen3VLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                                     video_processor=None)


def token_ids(tokenizer: Any) -> dict:
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in TOKENS.items()}
    return dict(image_token_id=ids["image_token"], video_token_id=ids["video_token"],
                vision_start_token_id=ids["vision_start_token"], vision_end_token_id=ids["vision_end_token"])


def local_text(preset: Preset, tokenizer: Any) -> dict:
    """The text config with the local tokenizer's padding and no end token (random weights: a
    generation runs its max_new_tokens, as the other presets')."""
    return dict(preset.text, bos_token_id=None, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)


def config_25(preset: Preset, tokenizer: Any) -> Any:
    vision = dict(preset.vision, out_hidden_size=preset.text["hidden_size"])
    return Qwen2_5_VLConfig(vision_config=vision, text_config=local_text(preset, tokenizer), **token_ids(tokenizer),
                            **{"tie_word_embeddings": False, **preset.extra})


def config_3(preset: Preset, tokenizer: Any) -> Any:
    vision = dict(preset.vision, out_hidden_size=preset.text["hidden_size"])
    return Qwen3VLConfig(vision_config=vision, text_config=local_text(preset, tokenizer), **token_ids(tokenizer),
                         **{"tie_word_embeddings": False, **preset.extra})


RECORD_25 = FamilyPresets("qwen2_5_vl", TOKENS, processor_25, config_25, {
    "qwen2.5-vl-3b": Preset("qwen2_5_vl", QWEN25_VIT, text(2048, 11008, 36, 16, 2, 151936, 1e6, [16, 24, 24]),
                            "Qwen/Qwen2.5-VL-3B-Instruct", {"tie_word_embeddings": True}),
    "qwen2.5-vl-7b": Preset("qwen2_5_vl", QWEN25_VIT, text(3584, 18944, 28, 28, 4, 152064, 1e6, [16, 24, 24]),
                            "Qwen/Qwen2.5-VL-7B-Instruct"),
    # Real geometry (patch 14, merge 2, 112 px windows, the checkpoints' pixels), tiny widths and
    # depths: full attention at blocks 1 and 3 of 4.
    "tiny-qwen2.5-vl": Preset("qwen2_5_vl", dict(QWEN25_VIT, **TINY, fullatt_block_indexes=[1, 3]),
                              text(64, 128, 2, 4, 2, 0, 1e6, [2, 3, 3])),
}, "tiny-qwen2.5-vl", placeholder=PLACEHOLDER)

RECORD_3 = FamilyPresets("qwen3_vl", TOKENS, processor_3, config_3, {
    "qwen3-vl-2b": Preset("qwen3_vl", QWEN3_VIT_2B,
                          text3(2048, 6144, 28, 16, 8, 151936, 5e6, [24, 20, 20], head_dim=128),
                          "Qwen/Qwen3-VL-2B-Instruct", {"tie_word_embeddings": True}),
    "qwen3-vl-8b": Preset("qwen3_vl", QWEN3_VIT_8B,
                          text3(4096, 12288, 36, 32, 8, 151936, 5e6, [24, 20, 20], head_dim=128),
                          "Qwen/Qwen3-VL-8B-Instruct"),
    # Real geometry (patch 16, merge 2, the checkpoints' pixels), tiny widths and depths: deepstack
    # features from blocks 1 and 2 of 4.
    "tiny-qwen3-vl": Preset("qwen3_vl", dict(QWEN3_VIT_2B, **TINY, deepstack_visual_indexes=[1, 2]),
                            text3(64, 128, 2, 4, 2, 0, 5e6, [4, 2, 2], head_dim=16)),
}, "tiny-qwen3-vl", placeholder=PLACEHOLDER)
