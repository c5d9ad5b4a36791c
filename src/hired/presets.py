"""Models built from configs with random weights: real checkpoint shapes for benchmarks and a
tiny model of real LLaVA-NeXT geometry for tests. Nothing here touches a model hub."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import (
    CLIPVisionConfig,
    InternVLConfig,
    InternVLVisionConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

from hired.checks import at_least
from hired.errors import HiREDError, OptionError
from hired.families import FAMILIES
from hired.families.base import without_video_processor

# LLaVA-v1.6's anyres resolutions (height, width) and CLIP ViT-L/14-336.
GRID_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CLIP_L_336 = dict(
    image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
    num_hidden_layers=24, num_attention_heads=16, projection_dim=768, hidden_act="quick_gelu",
)
# InternViT-300M-448px (InternVL 2.5 / 3 1B-8B): 448 px tiles, patch 14, CLS token, no qk norm.
INTERNVIT_300M = dict(
    model_type="internvl_vision", image_size=448, patch_size=14, hidden_size=1024, intermediate_size=4096,
    num_hidden_layers=24, num_attention_heads=16, attention_bias=True, use_qk_norm=False, norm_type="layer_norm",
    layer_norm_eps=1e-6, layer_scale_init_value=0.1, use_mean_pooling=True, hidden_act="gelu",
)
# SigLIP-so400m-patch14-384 as LLaVA-OneVision uses it (26 layers, no CLS token, no head).
SIGLIP_384 = dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                  num_attention_heads=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
# anyres_max_9's pinpoints: every grid of 1..6 x 1..6 crops of 384 px.
ONEVISION_PINPOINTS = [[384 * r, 384 * c] for r in range(1, 7) for c in range(1, 7)]
# InternVL's image-token strings (the real tokenizer's), in a local word-level tokenizer.
INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                   "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}


@dataclass(frozen=True)
class Preset:
    """Shapes of a real checkpoint (or of the tiny test model)."""

    family: str  # a key of hired.families.FAMILIES
    vision: dict
    text: dict
    checkpoint: str | None = None  # the hub id whose shapes these are
    extra: dict = field(default_factory=dict)


def _llama(hidden: int, inter: int, layers: int, heads: int, vocab: int = 32064, kv: int | None = None, **kw) -> dict:
    return dict(
        model_type="llama", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv or heads, vocab_size=vocab,
        max_position_embeddings=4096, rms_norm_eps=1e-5, **kw,
    )


def _qwen2(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int = 151674, **kw) -> dict:
    return dict(
        model_type="qwen2", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab, max_position_embeddings=32768,
        rms_norm_eps=1e-6, **kw,
    )


PRESETS: dict[str, Preset] = {
    "llava-next-vicuna-7b": Preset(
        "llava_next", CLIP_L_336, _llama(4096, 11008, 32, 32), "llava-hf/llava-v1.6-vicuna-7b-hf"
    ),
    "llava-next-mistral-7b": Preset(
        "llava_next",
        CLIP_L_336,
        dict(_llama(4096, 14336, 32, 32, kv=8, rope_theta=1e6), model_type="mistral", max_position_embeddings=32768,
             sliding_window=None),
        "llava-hf/llava-v1.6-mistral-7b-hf",
    ),
    "llava-next-13b": Preset(
        "llava_next", CLIP_L_336, _llama(5120, 13824, 40, 40), "llava-hf/llava-v1.6-vicuna-13b-hf"
    ),
    "llava-1.5-7b": Preset("llava", CLIP_L_336, _llama(4096, 11008, 32, 32), "llava-hf/llava-1.5-7b-hf"),
    # Real geometry (336px crops, patch 14, 576 tokens, real pinpoints), tiny widths and depths.
    "tiny-llava-next": Preset(
        "llava_next",
        dict(CLIP_L_336, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4),
        _llama(64, 128, 2, 4, vocab=0),
    ),
    "tiny-llava": Preset(
        "llava",
        dict(CLIP_L_336, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4),
        _llama(64, 128, 2, 4, vocab=0),
    ),
    # InternVL3: InternViT-300M + Qwen2.5 (0.5B / 7B), pixel shuffle 0.5, up to 12 tiles + thumbnail.
    "internvl3-1b": Preset("internvl", INTERNVIT_300M, _qwen2(896, 4864, 24, 14, 2), "OpenGVLab/InternVL3-1B-hf"),
    "internvl3-8b": Preset("internvl", INTERNVIT_300M, _qwen2(3584, 18944, 28, 28, 4), "OpenGVLab/InternVL3-8B-hf"),
    # LLaVA-OneVision: SigLIP-384 + Qwen2 (0.5B / 7B), anyres_max_9.
    "llava-onevision-qwen2-0.5b": Preset(
        "llava_onevision", SIGLIP_384, _qwen2(896, 4864, 24, 14, 2, vocab=152000, rope_theta=1e6),
        "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    ),
    "llava-onevision-qwen2-7b": Preset(
        "llava_onevision", SIGLIP_384, _qwen2(3584, 18944, 28, 28, 4, vocab=152128, rope_theta=1e6),
        "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    ),
    "tiny-llava-onevision": Preset(
        "llava_onevision",
        dict(SIGLIP_384, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4),
        _qwen2(64, 128, 2, 4, 2, vocab=0),
    ),
    # Real geometry (448 px tiles, patch 14, 256 tokens per tile, up to 12 tiles), tiny widths and depths.
    "tiny-internvl": Preset(
        "internvl",
        dict(INTERNVIT_300M, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4),
        _qwen2(64, 128, 2, 4, 2, vocab=0),
    ),
}

WORDS = (
    "what is the in of a an on to and color shape red green blue yellow white black orange purple "
    "square circle triangle star how many which letter inside there are describe image picture "
    "written sign left right top bottom one two three four five six seven eight nine zero yes no"
).split()


def build_tokenizer(words: list[str] | None = None, family: str = "llava_next") -> PreTrainedTokenizerFast:
    """A word-level tokenizer built locally, with the family's image special tokens (LLaVA's
    ``<image>``; InternVL's ``<img>``, ``</img>``, ``<IMG_CONTEXT>`` and ``<video>``, LLaVA-OneVision's
    ``<video>``, after LLaVA's)."""
    named = {"image_token": "<image>"}
    if family == "internvl":
        named = INTERNVL_TOKENS
    elif family == "llava_onevision":  # its processor counts video tokens too: give it one
        named = {"image_token": "<image>", "video_token": "<video>"}
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>"] + [t for t in named.values() if t != "<image>"]
    vocab = {token: i for i, token in enumerate(specials + [w for w in (words or WORDS) if w not in specials])}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        padding_side="left", extra_special_tokens=named,
    )


def build_processor(family: str = "llava_next", tokenizer: PreTrainedTokenizerFast | None = None,
                    crop: int | None = None, patch: int = 14, pinpoints: list[list[int]] | None = None,
                    max_tiles: int = 12):
    """A processor of the family's real preprocessing, PIL backend, local tokenizer (InternVL's
    also returns ``image_sizes``, see :func:`hired.families.internvl.processor_with_image_sizes`)."""
    tokenizer = tokenizer or build_tokenizer(family=family)
    if family == "internvl":
        from transformers import InternVLProcessor

        from hired.families.internvl import processor_with_image_sizes

        crop = crop or 448
        image_processor = GotOcr2ImageProcessorPil(size={"height": crop, "width": crop}, crop_to_patches=True,
                                                   min_patches=1, max_patches=max_tiles)
        base = without_video_processor(InternVLProcessor)(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
            image_seq_length=(crop // patch // 2) ** 2)
        return processor_with_image_sizes(base)
    if family == "llava_onevision":
        crop = crop or 384
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": crop, "width": crop}, image_grid_pinpoints=pinpoints or ONEVISION_PINPOINTS)
        cls = without_video_processor(LlavaOnevisionProcessor)
        return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                   num_image_tokens=(crop // patch) ** 2, vision_feature_select_strategy="full",
                   vision_aspect_ratio="anyres_max_9")
    crop = crop or 336
    common = dict(size={"shortest_edge": crop}, crop_size={"height": crop, "width": crop})
    if family == "llava_next":
        image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=pinpoints or GRID_PINPOINTS, **common)
        cls = LlavaNextProcessor
    elif family == "llava":
        image_processor = CLIPImageProcessorPil(**common)
        cls = LlavaProcessor
    else:
        raise HiREDError(f"no local processor for family {family!r}")
    return cls(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )


def build_config(name: str, vit_layers: int | None = None, llm_layers: int | None = None,
                 vocab_size: int | None = None):
    """The transformers config of a preset, depths optionally shrunk."""
    if name not in PRESETS:
        raise HiREDError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    vision = dict(preset.vision)
    text = dict(preset.text)
    for option, value, part in (("--vit-layers", vit_layers, vision), ("--llm-layers", llm_layers, text)):
        if value is not None:  # only K of the checkpoint's layers: between 1 and all of them
            at_least(value, 1, option)
            if value > part["num_hidden_layers"]:
                raise OptionError(f"{option} {value}: {name} has {part['num_hidden_layers']} such layers")
            part["num_hidden_layers"] = value
    tokenizer = build_tokenizer(family=preset.family)
    if vocab_size is not None or not text["vocab_size"]:
        text["vocab_size"] = vocab_size or len(tokenizer)
    # Presets pair with the local tokenizer (build_processor), so the image token is its id
    # (the real checkpoints use 32000 or 151667; the id changes no shape or timing).
    if preset.family == "internvl":
        return InternVLConfig(
            vision_config=InternVLVisionConfig(**{k: v for k, v in vision.items() if k != "model_type"}),
            text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(INTERNVL_TOKENS["context_image_token"]),
            downsample_ratio=0.5, vision_feature_layer=-1, vision_feature_select_strategy="default",
            projector_hidden_act="gelu", tie_word_embeddings=False,
        )
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    if preset.family == "llava_onevision":
        return LlavaOnevisionConfig(
            vision_config=SiglipVisionConfig(**vision), text_config=text, image_token_id=image_token,
            vision_feature_layer=-1, vision_feature_select_strategy="full", image_grid_pinpoints=ONEVISION_PINPOINTS,
            vision_aspect_ratio="anyres_max_9", projector_hidden_act="gelu", tie_word_embeddings=False,
        )
    common = dict(
        vision_config=CLIPVisionConfig(**vision), text_config=text, image_token_id=image_token,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    if preset.family == "llava_next":
        return LlavaNextConfig(image_grid_pinpoints=GRID_PINPOINTS, **common)
    if preset.family == "llava":
        return LlavaConfig(**common)
    raise HiREDError(f"no preset config for family {preset.family!r}")


def build_model(name: str = "tiny-llava-next", vit_layers: int | None = None, llm_layers: int | None = None,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0):
    """A random-weight model of a preset's shapes, built directly on ``device`` in ``dtype``."""
    config = build_config(name, vit_layers, llm_layers)
    cls = FAMILIES[PRESETS[name].family].model_class()
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = 0
    return model.eval()


def tiny(family: str = "llava_next", seed: int = 0):
    """(model, processor): the tiny random-weight model of real geometry used by tests."""
    name = {"llava_next": "tiny-llava-next", "internvl": "tiny-internvl",
            "llava_onevision": "tiny-llava-onevision"}.get(family, "tiny-llava")
    return build_model(name, seed=seed), build_processor(family)
