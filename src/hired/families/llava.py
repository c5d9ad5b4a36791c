"""LLaVA-1.5 and ShareGPT4V: one 336 px crop, 576 tokens, no newlines (phase 2 only)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from hired.core.layout import ImageLayout, single_view_layout
from hired.families.base import Family


class LlavaFamily(Family):
    name = "llava"
    model_types = ("llava",)

    def model_class(self) -> type:
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def layout(self, model_config: Any, image_size: tuple[int, int]) -> ImageLayout:
        return single_view_layout(self.tokens_per_partition(model_config))

    def image_features(self, model: nn.Module, pixel_values: Tensor, image_sizes: Tensor | None,
                       **kwargs: Any) -> list[Tensor]:
        out = model.model.get_image_features(pixel_values=pixel_values, return_dict=True, **kwargs)
        return list(out.pooler_output)
