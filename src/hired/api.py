"""Public entry points: apply, remove, from_pretrained."""

from __future__ import annotations

from typing import Any

from torch import nn

from hired.config import HiREDConfig
from hired.models import adapter_for

_PATCHED = ("forward", "generate")


def apply(model: nn.Module, config: HiREDConfig | None = None) -> nn.Module:
    """Patch ``model`` in place so that its ``forward`` and ``generate`` keep only the
    config's visual-token budget. Applying again replaces the previous patch.

    After each call with images, ``model.hired_report`` holds what was kept.
    """
    config = config if config is not None else HiREDConfig()
    adapter = adapter_for(model)(model, config)  # validates before touching the model
    remove(model)
    for name in _PATCHED:
        original = getattr(model, name)
        setattr(model, name, getattr(adapter, f"wrap_{name}")(original))
    model.hired_adapter = adapter
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


def from_pretrained(
    model_id: str, config: HiREDConfig | None = None, **kwargs: Any
) -> tuple[nn.Module, Any]:
    """Load a LLaVA-NeXT or LLaVA-1.5 checkpoint (hub id or local path) with its processor
    and apply HiRED. ``kwargs`` go to the model's ``from_pretrained`` (dtype, device_map, ...)."""
    from hired.loading import load_model_and_processor

    model, processor = load_model_and_processor(model_id, **kwargs)
    return apply(model, config), processor
