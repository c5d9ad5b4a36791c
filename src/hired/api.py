"""Public entry points: apply, remove, is_applied, from_pretrained, planned_tokens."""

from __future__ import annotations

from typing import Any

from torch import nn

from hired.backends.hf import HFPatch, PatchedMethod
from hired.config import HiREDConfig
from hired.errors import ConfigError, HiREDError
from hired.recipe import Recipe

_PATCHED = ("forward", "generate")
MAX_SIDE = 2**31 - 1  # pixels a side: past it the geometry's tensors overflow (a plain ValueError)


def apply(model: nn.Module, config: HiREDConfig | None = None) -> nn.Module:
    """Patch ``model`` in place so that its ``forward`` and ``generate`` keep only the
    config's visual-token budget. Applying again replaces the previous patch.

    After each call with images, ``model.hired_report`` holds what was kept.
    """
    config = config if config is not None else HiREDConfig()
    if not isinstance(config, HiREDConfig):
        raise ConfigError(f"config must be a hired.HiREDConfig, got {type(config).__name__}")
    patch = HFPatch(model, config)  # validates before touching the model
    remove(model)
    for name in _PATCHED:
        setattr(model, name, PatchedMethod(patch, name, getattr(model, name)))
    model.hired_adapter = patch
    model.hired_config = config
    model.hired_report = None
    return model


def remove(model: nn.Module) -> nn.Module:
    """Undo :func:`apply`; a model that was never patched is returned unchanged."""
    for name in (*_PATCHED, "hired_adapter", "hired_config", "hired_report"):
        model.__dict__.pop(name, None)
    return model


def is_applied(model: nn.Module) -> bool:
    return "hired_adapter" in model.__dict__


def planned_tokens(model_config: Any, image_size: tuple[int, int], config: HiREDConfig | None = None,
                   images_in_prompt: int = 1, processor: Any = None) -> int | None:
    """Image tokens (visual + newline) the language model receives for one image of
    ``image_size`` = (height, width) under ``config``, from the model config and geometry alone,
    with no forward pass. ``None`` where the count depends on the content (adaptive PruMerge,
    newlines "kept_rows", official allocation below 100%). With budget 1.0 and newlines "all" it
    is the processor's placeholder count. ``images_in_prompt``: how many images the image's prompt
    holds (LLaVA-OneVision does not tile an image that shares its prompt). ``processor``: the
    processor (or its image options) where they decide how a picture is cut or resized and are not
    the checkpoint's defaults (InternVL's tile limits)."""
    config = config if config is not None else HiREDConfig()
    if not isinstance(config, HiREDConfig):
        raise ConfigError(f"config must be a hired.HiREDConfig, got {type(config).__name__}")
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise HiREDError(f"image_size must be (height, width), got {image_size!r}") from None
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise HiREDError(f"image_size sides must be from 1 to {MAX_SIDE} pixels, got {(height, width)}")
    if isinstance(images_in_prompt, bool) or not isinstance(images_in_prompt, int) or images_in_prompt < 1:
        raise HiREDError(f"images_in_prompt must be an int >= 1, got {images_in_prompt!r}")
    return Recipe.build(model_config, config).planned_tokens((height, width), images_in_prompt, processor)


def from_pretrained(
    model_id: str, config: HiREDConfig | None = None, **kwargs: Any
) -> tuple[nn.Module, Any]:
    """Load a supported checkpoint (hub id or local path) with its processor and apply HiRED.
    ``kwargs`` go to the model's ``from_pretrained`` (dtype, device_map, ...)."""
    from hired.loading import load_model_and_processor

    model, processor = load_model_and_processor(model_id, **kwargs)
    return apply(model, config), processor
