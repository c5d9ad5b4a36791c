"""One adapter per model family; the only modules that know transformers' internals."""

from __future__ import annotations

from torch import nn

from hired.errors import UnsupportedModelError
from hired.models.base import Adapter
from hired.models.llava import LlavaAdapter
from hired.models.llava_next import LlavaNextAdapter

ADAPTERS: tuple[type[Adapter], ...] = (LlavaNextAdapter, LlavaAdapter)


def adapter_for(model: nn.Module) -> type[Adapter]:
    for adapter in ADAPTERS:
        if isinstance(model, adapter.model_classes):
            return adapter
    names = ", ".join(cls.__name__ for adapter in ADAPTERS for cls in adapter.model_classes)
    raise UnsupportedModelError(f"{type(model).__name__} is not supported; hired supports {names}")
