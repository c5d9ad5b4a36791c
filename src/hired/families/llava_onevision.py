"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``, llava-hf/llava-onevision-qwen2-*-ov-hf).

Geometry, as transformers 5.x implements it (``modeling_llava_onevision.pack_image_features``):

- SigLIP has no CLS token: 27 x 27 = 729 tokens per 384 px crop, all of them features
  (``vision_feature_select_strategy="full"``, layer -1).
- The base image (the whole picture resized) comes FIRST, then the anyres grid of crops
  (pinpoints up to 6 x 6 crops), merged into one (rows x 27) x (cols x 27) map, unpadded to the
  picture's aspect ratio; when that map holds more than ``anyres_max_9`` allows (ratio > 1.1 over
  9 crops' worth) it is bilinearly downsampled to (h // ratio) x (w // ratio); then one newline
  token closes each row. The base image has no newline.

Scores: with no CLS, a token's score is the mean attention it receives (``score="received"``,
:func:`hired.core.scoring.received_attention`). A downsampled token is ranked by the ViT scores
pooled the same way as its features (the same bilinear weights, ``ImageLayout.sources`` and
``weights``), and belongs to the crop that holds its nearest source token, in that crop's raster
slot (slots no token lands in are invalid); a ratio budget is then a share of the tokens the
language model gets (base + downsampled map, ``ImageLayout.budget_total``), not of the crops'.
Phase 1 maps the base image's scores onto the crops' regions as for LLaVA-NeXT; with downsampling
the picture's bounding box in the crop canvas is read from the occupied slots, so it can be up to
one source token short on each side.

Multi-image prompts: where a prompt holds several images (the processor's ``batch_num_images``),
the model does not tile them; each is its base image alone plus one newline, a single partition
ranked by plain top-k, like LLaVA-1.5 (``ImageInput.in_prompt``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hired.core.layout import NEWLINE, ImageLayout
from hired.errors import UnsupportedModelError
from hired.families.base import Family, ImageInput


def interpolation_weights(size_in: int, size_out: int) -> Tensor:
    """[size_out, size_in] the 1-D weights of ``F.interpolate(mode="bilinear")`` along one axis
    (bilinear is separable: a 2-D weight is the product of the row and column weights)."""
    eye = torch.eye(size_in, dtype=torch.float64)[None, :, :, None]  # [1, C=size_in, H=size_in, W=1]
    return F.interpolate(eye, size=(size_out, 1), mode="bilinear")[0, :, :, 0].T


@lru_cache(maxsize=8)
def base_only_layout(tokens: int) -> ImageLayout:
    """An image the model does not tile: its base image, then one newline."""
    return ImageLayout(torch.cat([torch.arange(tokens), torch.tensor([NEWLINE])]), 1, tokens, (1, 1))


@lru_cache(maxsize=1024)
def onevision_layout(crop: int, patch: int, pinpoints: tuple[tuple[int, int], ...], image_size: tuple[int, int],
                     max_crops: int) -> ImageLayout:
    from transformers.models.llava_onevision.modeling_llava_onevision import (
        get_anyres_image_grid_shape,
        image_size_to_num_patches,
        unpad_image,
    )

    side = crop // patch
    tokens = side * side
    grid_pinpoints = [list(p) for p in pinpoints]
    partitions = image_size_to_num_patches(list(image_size), grid_pinpoints, crop)
    if partitions == 1:
        return base_only_layout(tokens)
    rows, cols = (int(v) for v in get_anyres_image_grid_shape(list(image_size), grid_pinpoints, crop))
    # flat partition-token index of each cell of the crops' merged map, then unpadded as the model does
    index = torch.arange(tokens, partitions * tokens, dtype=torch.float64).view(rows, cols, side, side)
    merged = index.permute(0, 2, 1, 3).reshape(1, rows * side, cols * side)
    cells = unpad_image(merged, torch.tensor(image_size))[0].round().long()  # [h, w]
    h, w = cells.shape
    ratio = math.sqrt(h * w / (max_crops * side**2))
    newline = torch.full((h, 1), NEWLINE)
    if ratio <= 1.1:
        positions = torch.cat([torch.arange(tokens), torch.cat([cells, newline], 1).flatten()])
        return ImageLayout(positions, partitions, tokens, (rows, cols))
    h2, w2 = int(h // ratio), int(w // ratio)
    wy, wx = interpolation_weights(h, h2), interpolation_weights(w, w2)  # [h2, h], [w2, w]
    ky, kx = min(2, h), min(2, w)
    top_y, top_x = wy.topk(ky, -1), wx.topk(kx, -1)  # bilinear: at most 2 sources per axis
    # each output token sits in the slot of its nearest source (distinct: the map shrinks)
    slot = cells[wy.argmax(-1)][:, wx.argmax(-1)]  # [h2, w2]
    src = cells[top_y.indices[:, None, :, None], top_x.indices[None, :, None, :]]  # [h2, w2, ky, kx]
    weight = top_y.values[:, None, :, None] * top_x.values[None, :, None, :]
    k = ky * kx
    sources = torch.arange(partitions * tokens)[:, None].repeat(1, k)  # identity where not downsampled
    weights = torch.zeros(partitions * tokens, k, dtype=torch.float64)
    weights[:tokens, 0] = 1.0  # the base image
    sources[slot.flatten()] = src.reshape(-1, k)
    weights[slot.flatten()] = weight.reshape(-1, k)
    positions = torch.cat([torch.arange(tokens), torch.cat([slot, torch.full((h2, 1), NEWLINE)], 1).flatten()])
    return ImageLayout(positions, partitions, tokens, (rows, cols), None, sources.view(partitions, tokens, k),
                       weights.view(partitions, tokens, k).float(), budget_total=tokens + h2 * w2)


class LlavaOnevisionFamily(Family):
    name = "llava_onevision"
    label = "LLaVA-OneVision"
    model_types = ("llava_onevision",)

    def has_cls(self, model_config: Any) -> bool:
        return model_config.vision_config.model_type != "siglip_vision_model"

    def max_crops(self, model_config: Any) -> int:
        aspect = str(getattr(model_config, "vision_aspect_ratio", "anyres_max_9"))
        if not aspect.startswith("anyres_max_"):
            raise UnsupportedModelError(f"vision_aspect_ratio={aspect!r}: hired reads 'anyres_max_N' only")
        return int(aspect.removeprefix("anyres_max_"))

    def layout(self, model_config: Any, image: ImageInput | tuple[int, int]) -> ImageLayout:
        """As the model decides: an image is tiled only when its prompt holds no other image."""
        image = ImageInput.of(image)
        if image.in_prompt > 1:
            return base_only_layout(self.tokens_per_partition(model_config))
        size = image.picture_size(self.name)
        vision = model_config.vision_config
        pinpoints = tuple(tuple(int(v) for v in p) for p in model_config.image_grid_pinpoints)
        return onevision_layout(int(vision.image_size), int(vision.patch_size), pinpoints, size,
                                self.max_crops(model_config))

    def check_config(self, model_config: Any) -> None:
        strategy = model_config.vision_feature_select_strategy
        expected = "default" if self.has_cls(model_config) else "full"
        if strategy != expected or not isinstance(model_config.vision_feature_layer, int):
            raise UnsupportedModelError(
                f"vision_feature_select_strategy={strategy!r}, vision_feature_layer="
                f"{model_config.vision_feature_layer!r}: hired reads one feature layer with strategy {expected!r} "
                "for this vision tower"
            )
        self.max_crops(model_config)
