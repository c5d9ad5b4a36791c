"""InternVL 2.5 / 3 / 3.5 ("-hf" checkpoints, ``InternVLForConditionalGeneration``).

Geometry, as transformers 5.x implements it (``modeling_internvl``, ``processing_internvl``,
``image_processing_pil_got_ocr2``):

- InternViT prepends a CLS token (``embeddings.cls_token``): 1 + 32 x 32 tokens per 448 px tile
  (patch 14); the features come from layer -1 with the CLS token dropped ("default").
- Pixel shuffle (``downsample_ratio`` 0.5) turns each tile's 32 x 32 patches into 16 x 16 = 256
  tokens, token (i, j) holding patches (2i..2i+1, 2j..2j+1); the projector maps each to the LM.
- The image processor resizes the image (no aspect preservation, no padding) to a grid of
  cols x rows tiles chosen by ``get_optimal_tiled_canvas`` (closest aspect ratio, at most
  ``max_patches`` = 12 tiles), emits the tiles row-major and, only when there are 2+ tiles, the
  thumbnail (the whole image resized to 448 x 448) LAST. The prompt holds
  ``<img>`` + 256 x tiles ``<IMG_CONTEXT>`` + ``</img>``; no newline tokens, no unpadding.

HiRED's order puts the full view first: partition 0 is the thumbnail (model crop ``tiles``),
partition k the tile k - 1 (``ImageLayout.crop_order``); the LM sequence keeps the model's order
(``positions``). Phase 1 reads the thumbnail's early-layer CLS attention over each tile's region:
both cover the whole picture, so the thumbnail's 16 x 16 grid maps onto the rows x cols tiles
uniformly (:func:`hired.core.allocation.subimage_content`, fractional cells shared by overlap).
A token's score is the CLS attention summed over its 2 x 2 patch group (``ImageLayout.sources``).
A single-tile image (no thumbnail) is one partition: plain top-k, like LLaVA-1.5.

The grid of an image is not in ``pixel_values`` (6 tiles may be 2x3, 3x2, 1x6 or 6x1): it follows
from two facts the model's inputs carry, the picture's size and its tile count. The count is
read from the image's placeholders (256 per tile, thumbnail included) or its rows of
``pixel_values``; the grid is then the arrangement of that many tiles the processor chooses for
that size (:func:`tile_grid_of_count`: ``get_optimal_tiled_canvas`` restricted to that count
picks what the processor picked, whatever tile limits it ran with), so no tile limit is guessed
and call-time limits (``processor(..., max_patches=2)``) work. The size comes as ``image_sizes``
(height, width) per image, which the processor does not return:
:func:`processor_with_image_sizes` makes it (:func:`hired.from_pretrained` does).
:meth:`InternVLFamily.image_input` (what the processor makes of a picture of a given size, for
``planned_tokens``) reads the processor's limits where it is given, else the checkpoints'
(1 to 12 tiles; InternVL's processor crops on every call, whatever ``crop_to_patches`` the
image processor saved).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from hired.core.layout import ImageLayout
from hired.errors import ImageTokenMismatchError, UnsupportedModelError
from hired.families.base import EncoderShape, Family, ImageInput

MIN_TILES, MAX_TILES = 1, 12  # GotOcr2ImageProcessor's defaults, which the InternVL checkpoints use


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


def tile_grid(image_size: tuple[int, int], tile: tuple[int, int], min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """(rows, cols) of tiles for an image of (height, width), as the processor chooses them."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    if max_tiles <= 1:  # the processor does not crop: one tile
        return 1, 1
    cols, rows = get_optimal_tiled_canvas(tuple(image_size), tuple(tile), min_tiles, max_tiles)
    return int(rows), int(cols)


def tile_grid_of_count(image_size: tuple[int, int], tile: tuple[int, int], tiles: int) -> tuple[int, int]:
    """(rows, cols) of the ``tiles`` tiles the processor cut an image of (height, width) into.
    The processor picks the arrangement with the closest aspect ratio among all counts in its
    limits (ties to more tiles while they cover under twice the picture); the arrangement it
    picked is therefore also the best among those of its own count, by the same rule, so the
    count alone decides it, whatever the limits were."""
    if tiles <= 1:
        return 1, 1
    return tile_grid(image_size, tile, tiles, tiles)


def processor_tile_limits(processor: Any) -> tuple[int, int]:
    """(min, max) tiles an InternVL processor (or its image processor, or a dict of its image
    options) cuts a picture into when called: InternVL's processor always crops (it sets
    ``crop_to_patches`` on each call unless told otherwise); None -> the checkpoints' 1..12."""
    if processor is None:
        return MIN_TILES, MAX_TILES
    if isinstance(processor, dict):
        if processor.get("crop_to_patches") is False:  # an explicit call-time choice
            return 1, 1
        return int(processor.get("min_patches", MIN_TILES)), int(processor.get("max_patches", MAX_TILES))
    image_processor = getattr(processor, "image_processor", processor)
    return (int(getattr(image_processor, "min_patches", MIN_TILES)),
            int(getattr(image_processor, "max_patches", MAX_TILES)))


@lru_cache(maxsize=8)
def shuffle_groups(side: int, ratio: float) -> Tensor:
    """[N, G] ViT patch indices (row-major over side x side) in each pixel-shuffled token, read
    from transformers' own ``pixel_shuffle`` run on index features."""
    from transformers.models.internvl.modeling_internvl import InternVLModel

    index = torch.arange(side * side, dtype=torch.float64).view(1, side, side, 1)
    shuffled = InternVLModel.pixel_shuffle(None, index, scale_factor=ratio)
    return shuffled.reshape(-1, shuffled.shape[-1]).round().long()


@lru_cache(maxsize=1024)
def internvl_layout(side: int, ratio: float, grid: tuple[int, int]) -> ImageLayout:
    groups = shuffle_groups(side, ratio)  # [N, 4] patches of each token
    tokens = groups.shape[0]
    tiles = grid[0] * grid[1]
    if tiles == 1:  # one tile, no thumbnail
        return ImageLayout(torch.arange(tokens), 1, tokens, (1, 1), None, groups[None])
    # model order: tile 0 .. tile T-1, thumbnail; HiRED's: thumbnail, tile 0 .. tile T-1
    order = (tiles, *range(tiles))
    positions = torch.cat([torch.arange(tokens, (tiles + 1) * tokens), torch.arange(tokens)])
    sources = torch.tensor(order)[:, None, None] * (side * side) + groups[None]  # [P, N, 4] flat patch indices
    return ImageLayout(positions, tiles + 1, tokens, grid, order, sources)


class InternVLFamily(Family):
    name = "internvl"
    label = "InternVL"
    model_types = ("internvl",)

    def side(self, model_config: Any) -> int:
        """ViT patches per tile side (448 / 14 = 32)."""
        vision = model_config.vision_config
        (h, w), (ph, pw) = _pair(vision.image_size), _pair(vision.patch_size)
        if h != w or ph != pw or h % ph:
            raise UnsupportedModelError(f"InternVL tiles of {h}x{w} px, patch {ph}x{pw}: hired needs square tiles")
        return h // ph

    def tokens_per_partition(self, model_config: Any) -> int:
        return int(shuffle_groups(self.side(model_config), float(model_config.downsample_ratio)).shape[0])

    def image_input(self, model_config: Any, size: tuple[int, int], images_in_prompt: int = 1,
                    processor: Any = None) -> ImageInput:
        size = (int(size[0]), int(size[1]))
        rows, cols = tile_grid(size, _pair(model_config.vision_config.image_size), *processor_tile_limits(processor))
        tiles = rows * cols
        return ImageInput(size=size, crops=tiles + 1 if tiles > 1 else 1, in_prompt=images_in_prompt)

    def layout(self, model_config: Any, image: ImageInput | tuple[int, int]) -> ImageLayout:
        image = ImageInput.of(image)
        if image.crops is None:  # a size alone: what the processor makes of it with the checkpoints' limits
            image = self.image_input(model_config, image.size)
        tiles = image.crops - 1 if image.crops > 1 else 1
        if image.size is None:
            if tiles > 1:
                raise ImageTokenMismatchError(
                    f"InternVL needs each image's (height, width) to know how its {tiles} tiles are arranged "
                    "(6 tiles may be 2x3, 3x2, 1x6 or 6x1): pass image_sizes with pixel_values "
                    "(hired.processor_with_image_sizes returns them; hired.from_pretrained uses it)")
            grid = (1, 1)
        else:
            grid = tile_grid_of_count(image.size, _pair(model_config.vision_config.image_size), tiles)
        return internvl_layout(self.side(model_config), float(model_config.downsample_ratio), grid)

    def encoder_shape(self, model_config: Any) -> EncoderShape:
        vision = model_config.vision_config
        side = self.side(model_config)
        patch = _pair(vision.patch_size)[0]
        return EncoderShape(int(vision.hidden_size), int(vision.intermediate_size),
                            self.vision_layer_count(model_config),
                            side * side + 1, int(getattr(vision, "num_channels", 3)) * patch * patch,
                            round(1 / float(model_config.downsample_ratio)) ** 2)

    def check_config(self, model_config: Any) -> None:
        super().check_config(model_config)
        side = self.side(model_config)
        ratio = float(model_config.downsample_ratio)
        if side * ratio != int(side * ratio):
            raise UnsupportedModelError(f"downsample_ratio={ratio} does not divide {side} patches per tile side")
