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
    LlavaConfig,
    LlavaNextConfig,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from hired.checks import at_least
from hired.errors import HiREDError, OptionError
from hired.families import FAMILIES

# LLaVA-v1.6's anyres resolutions (height, width) and CLIP ViT-L/14-336.
GRID_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CLIP_L_336 = dict(
    image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
    num_hidden_layers=24, num_attention_heads=16, projection_dim=768, hidden_act="quick_gelu",
)


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
}

WORDS = (
    "what is the in of a an on to and color shape red green blue yellow white black orange purple "
    "square circle triangle star how many which letter inside there are describe image picture "
    "written sign left right top bottom one two three four five six seven eight nine zero yes no"
).split()


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built locally, with LLaVA's special tokens."""
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
    vocab = {token: i for i, token in enumerate(specials + [w for w in (words or WORDS) if w not in specials])}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        padding_side="left", extra_special_tokens={"image_token": "<image>"},
    )


def build_processor(family: str = "llava_next", tokenizer: PreTrainedTokenizerFast | None = None, crop: int = 336,
                    patch: int = 14, pinpoints: list[list[int]] | None = None):
    """A processor of the real LLaVA(-NeXT) preprocessing, PIL backend, local tokenizer."""
    tokenizer = tokenizer or build_tokenizer()
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
    if vocab_size is not None or not text["vocab_size"]:
        text["vocab_size"] = vocab_size or len(build_tokenizer())
    # Presets pair with the local tokenizer (build_processor), so the image token is its "<image>" id
    # (the real checkpoints use 32000; the id changes no shape or timing).
    image_token = build_tokenizer().convert_tokens_to_ids("<image>")
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
    name = "tiny-llava-next" if family == "llava_next" else "tiny-llava"
    return build_model(name, seed=seed), build_processor(family)
