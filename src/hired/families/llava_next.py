"""LLaVA-NeXT (LLaVA-1.6): a full view + a grid of sub-images, unpadding, image newlines."""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace
from typing import Any

import torch

from hired.core.layout import NEWLINE, ImageLayout
from hired.families.base import Family, ImageInput


@lru_cache(maxsize=1024)
def anyres_layout(crop: int, patch: int, pinpoints: tuple[tuple[int, int], ...], image_size: tuple[int, int]):
    """The layout of LLaVA-NeXT's anyres packing, read from transformers' own
    ``pack_image_features`` run on index features (so unpadding and newlines match it exactly)."""
    from transformers.models.llava_next.modeling_llava_next import (
        LlavaNextModel,
        get_anyres_image_grid_shape,
        image_size_to_num_patches,
    )

    grid_pinpoints = [list(p) for p in pinpoints]
    partitions = image_size_to_num_patches(list(image_size), grid_pinpoints, crop)
    grid = tuple(get_anyres_image_grid_shape(list(image_size), grid_pinpoints, crop))
    tokens = (crop // patch) ** 2
    geometry = SimpleNamespace(
        config=SimpleNamespace(vision_config=SimpleNamespace(image_size=crop, patch_size=patch),
                               image_grid_pinpoints=grid_pinpoints)
    )
    index = torch.arange(partitions * tokens, dtype=torch.float64).view(partitions, tokens, 1)
    packed, _ = LlavaNextModel.pack_image_features(
        geometry, [index], torch.tensor([image_size]), vision_feature_select_strategy="default",
        image_newline=torch.tensor([float(NEWLINE)], dtype=torch.float64),
    )
    positions = packed[0].view(-1).round().long()
    return ImageLayout(positions, partitions, tokens, (int(grid[0]), int(grid[1])))


class LlavaNextFamily(Family):
    name = "llava_next"
    label = "LLaVA-NeXT"
    model_types = ("llava_next",)

    def layout(self, model_config: Any, image: ImageInput | tuple[int, int]) -> ImageLayout:
        size = ImageInput.of(image).picture_size(self.name)
        vision = model_config.vision_config
        pinpoints = tuple(tuple(int(v) for v in p) for p in model_config.image_grid_pinpoints)
        return anyres_layout(int(vision.image_size), int(vision.patch_size), pinpoints, size)

