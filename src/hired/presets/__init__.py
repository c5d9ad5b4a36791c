"""Models built from configs with random weights: real checkpoint shapes for benchmarks and tiny
models of real geometry for tests, one record per family (its module here). Nothing here touches
a model hub."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast

from hired.backends.hf.table import HF_MODELS
from hired.checks import at_least
from hired.errors import HiREDError, OptionError
from hired.presets import internvl, llava_next, llava_onevision, qwen_vl
from hired.presets.base import WORDS, FamilyPresets, Preset, word_tokenizer

RECORDS: dict[str, FamilyPresets] = {
    record.family: record
    for record in (llava_next.RECORD, llava_next.LLAVA_RECORD, internvl.RECORD, llava_onevision.RECORD,
                   qwen_vl.RECORD_25, qwen_vl.RECORD_3)
}
PRESETS: dict[str, Preset] = {name: preset for record in RECORDS.values() for name, preset in record.presets.items()}


def record_of(family: str) -> FamilyPresets:
    if family not in RECORDS:
        raise HiREDError(f"no presets for family {family!r}; families with presets: {', '.join(RECORDS)}")
    return RECORDS[family]


def build_tokenizer(words: list[str] | None = None, family: str = "llava_next") -> PreTrainedTokenizerFast:
    """A word-level tokenizer built locally, with the family's image special tokens."""
    return word_tokenizer(record_of(family).tokens, words)


def build_processor(family: str = "llava_next", tokenizer: PreTrainedTokenizerFast | None = None, **geometry):
    """A processor of the family's real preprocessing, PIL backend, local tokenizer; ``geometry``
    (crop, patch, pinpoints, max_tiles, ...) as the family's record takes it."""
    record = record_of(family)
    return record.processor(tokenizer or build_tokenizer(family=family), **geometry)


def build_config(name: str, vit_layers: int | None = None, llm_layers: int | None = None,
                 vocab_size: int | None = None):
    """The transformers config of a preset, depths optionally shrunk."""
    if name not in PRESETS:
        raise HiREDError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    vision, text = dict(preset.vision), dict(preset.text)
    for option, value, part in (("--vit-layers", vit_layers, vision), ("--llm-layers", llm_layers, text)):
        key = "depth" if "depth" in part else "num_hidden_layers"
        if value is not None:  # only K of the checkpoint's layers: between 1 and all of them
            at_least(value, 1, option)
            if value > part[key]:
                raise OptionError(f"{option} {value}: {name} has {part[key]} such layers")
            part[key] = value
    tokenizer = build_tokenizer(family=preset.family)
    if vocab_size is not None or not text["vocab_size"]:
        text["vocab_size"] = vocab_size or len(tokenizer)
    # Presets pair with the local tokenizer (build_processor), so image tokens get its ids (the real
    # checkpoints use others; an id changes no shape or timing).
    return record_of(preset.family).config(Preset(preset.family, vision, text, preset.checkpoint, preset.extra),
                                           tokenizer)


def build_model(name: str = "tiny-llava-next", vit_layers: int | None = None, llm_layers: int | None = None,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0):
    """A random-weight model of a preset's shapes, built directly on ``device`` in ``dtype``."""
    config = build_config(name, vit_layers, llm_layers)
    cls = HF_MODELS[PRESETS[name].family].transformers_class()
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
    return build_model(record_of(family).tiny, seed=seed), build_processor(family)


__all__ = ["PRESETS", "RECORDS", "WORDS", "Preset", "build_config", "build_model", "build_processor",
           "build_tokenizer", "record_of", "tiny"]
