"""LLaVA-1.5 and ShareGPT4V: one 336 px crop, 576 tokens, no newlines (phase 2 only)."""

from __future__ import annotations

from typing import Any

from hired.core.layout import ImageLayout, single_view_layout
from hired.families.base import Family, ImageInput


class LlavaFamily(Family):
    name = "llava"
    label = "LLaVA-1.5"
    model_types = ("llava",)

    def layout(self, model_config: Any, image: ImageInput | tuple[int, int] | None = None) -> ImageLayout:
        return single_view_layout(self.tokens_per_partition(model_config))
