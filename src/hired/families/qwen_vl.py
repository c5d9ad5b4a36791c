"""Qwen2.5-VL and Qwen3-VL (``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``).

Geometry, as transformers 5.x implements it (``modeling_qwen2_5_vl``, ``modeling_qwen3_vl``,
``image_processing_qwen2_vl.smart_resize``):

- Native resolution, no tiles and no CLS token: the processor resizes a picture with
  ``smart_resize`` to multiples of ``patch x merge`` (28 px for Qwen2.5-VL, 32 px for Qwen3-VL)
  with an area within the processor's ``min_pixels`` / ``max_pixels``; a still image is one
  temporal patch (grid t = 1, the frame repeated for ``temporal_patch_size`` 2). The ViT runs on
  its (h, w) patch grid; the merger turns each 2 x 2 patch group into one language-model token,
  so the image gives (h / 2) x (w / 2) tokens in raster order and no newline tokens
  (``ImageInput.grid`` = ``image_grid_thw``).
- The patches reach the ViT group-major (the 4 patches of an LM token consecutive).
  Qwen2.5-VL's blocks see them in *window order* (``get_vision_window_index``: groups permuted
  into 112 px windows); only ``fullatt_block_indexes`` (7, 15, 23, 31) attend over the whole
  picture, the others within a window. Qwen3-VL has no windows: every layer is global, and its
  ``deepstack_visual_indexes`` layers give extra features that the first language-model layers
  add at the image tokens (cut with the same keep mask as the main features).

Scores: no CLS, so a token's score is the mean attention it receives (``score="received"``),
from q and K after the 2-D rotary embedding, per image (packed ``cu_seqlens``), read only at
global layers (Qwen2.5-VL: init layer 7, final layer 31 by default). An LM token's score is the
sum over its 2 x 2 patch group; ``ImageLayout.sources`` names those patches in the order the
blocks hold them (Qwen2.5-VL's window order), so the window permutation is undone by the layout
and the scores reach the policy in the model's raster order.

Phase 1 regions: there is no low-resolution full view. The LM-token map is cut into a grid of
square cells of :data:`CELL_PX` (448 px: 16 x 16 tokens for Qwen2.5-VL, 14 x 14 for Qwen3-VL,
the last row and column of cells partial; ``ImageLayout.full_view = False``); each cell is one
partition. HiRED shares the budget among the cells: a share ``alpha`` in proportion to their
area (the even coverage HiRED's full view gives) and the rest in proportion to the early-layer
score mass in each cell (:func:`hired.core.allocation.region_budgets`); phase 2 keeps each
cell's top tokens. ``alpha=0`` is content only. A picture of one cell or less is one partition.

Positions: the language model numbers image tokens with 3-D mRoPE (t, h, w) from the image grid
(:meth:`QwenVLFamily.rotary_positions`); the transformers backend keeps each kept token's and
each text token's position of the unmodified prompt (``hired.backends.hf.table``).

Images only: video inputs are refused by the backends (videos are neither scored nor cut).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from hired.core.layout import ImageLayout
from hired.errors import InputError, UnsupportedModelError
from hired.families.base import EncoderShape, Family, ImageInput

CELL_PX = 448  # side of a phase-1 region, in pixels of the resized picture


def processor_pixels(processor: Any, default: tuple[int, int]) -> tuple[int, int]:
    """(min_pixels, max_pixels) of a Qwen processor, its image processor or a dict of its options
    (``size`` {"shortest_edge", "longest_edge"} or ``min_pixels`` / ``max_pixels``); ``default``
    (the checkpoints') where none is given."""
    if processor is None:
        return default
    if isinstance(processor, dict):
        options = processor
    else:
        image_processor = getattr(processor, "image_processor", processor)
        options = {"size": getattr(image_processor, "size", None),
                   "min_pixels": getattr(image_processor, "min_pixels", None),
                   "max_pixels": getattr(image_processor, "max_pixels", None)}
    size = options.get("size") or {}
    low = options.get("min_pixels") or size.get("shortest_edge") or default[0]
    high = options.get("max_pixels") or size.get("longest_edge") or default[1]
    return int(low), int(high)


def resized_grid(size: tuple[int, int], patch: int, merge: int, min_pixels: int, max_pixels: int
                 ) -> tuple[int, int, int]:
    """(t, h, w) patch grid of a still picture of (height, width), as the processor resizes it."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise InputError(f"picture size {height}x{width}: both sides must be at least 1 px")
    try:
        h, w = smart_resize(height, width, factor=patch * merge, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as error:  # the processor refuses aspect ratios over 200 the same way
        raise InputError(f"a {height}x{width} picture: {error}") from None
    return 1, h // patch, w // patch


@lru_cache(maxsize=1024)
def qwen_layout(grid: tuple[int, int, int], merge: int, cell: int, window: int) -> ImageLayout:
    """The layout of one image of patch grid ``grid`` = (t, h, w): ``cell`` LM tokens per region
    side; ``window`` LM tokens per attention-window side (0: no windows, Qwen3-VL)."""
    t, gh, gw = grid
    if t != 1 or gh % merge or gw % merge:
        raise UnsupportedModelError(f"image grid {grid}: hired reads still images (t = 1) of whole merge groups")
    H, W = gh // merge, gw // merge
    ch, cw = min(cell, H), min(cell, W)
    rows, cols = math.ceil(H / ch), math.ceil(W / cw)
    N, P = ch * cw, rows * cols
    y = torch.arange(H)[:, None].expand(H, W).flatten()
    x = torch.arange(W)[None, :].expand(H, W).flatten()
    positions = ((y // ch) * cols + x // cw) * N + (y % ch) * cw + x % cw  # raster token -> partition token
    unit = merge * merge
    if window:
        from transformers.vision_utils import get_vision_window_index

        order, _ = get_vision_window_index(torch.tensor([grid]), merge, window * merge, 1)  # window slot -> raster
        slot = torch.argsort(order)  # raster -> its slot in window order
    else:
        slot = torch.arange(H * W)
    token_index = torch.full((P * N,), -1, dtype=torch.long)
    token_index[positions] = slot
    sources = torch.arange(unit).repeat(P * N, 1)  # absent slots: any patch (they are never valid)
    sources[positions] = slot[:, None] * unit + torch.arange(unit)
    # a ratio budget is a share of the picture's H x W tokens, not of its cells' padded slots
    return ImageLayout(positions, P, N, (rows, cols), None, sources.view(P, N, unit), None, budget_total=H * W,
                       full_view=False, shape=(ch, cw), crops=1, token_index=token_index.view(P, N))


class QwenVLFamily(Family):
    """What Qwen2.5-VL and Qwen3-VL share (see the module docstring)."""

    default_pixels: tuple[int, int] = (56 * 56, 28 * 28 * 1280)

    def patch(self, model_config: Any) -> int:
        return int(model_config.vision_config.patch_size)

    def merge(self, model_config: Any) -> int:
        return int(model_config.vision_config.spatial_merge_size)

    def cell(self, model_config: Any) -> int:
        """LM tokens per side of a phase-1 region (448 px)."""
        return max(1, round(CELL_PX / (self.patch(model_config) * self.merge(model_config))))

    def window(self, model_config: Any) -> int:
        return 0

    def tokens_per_partition(self, model_config: Any) -> int:
        return self.cell(model_config) ** 2

    def image_input(self, model_config: Any, size: tuple[int, int], images_in_prompt: int = 1,
                    processor: Any = None) -> ImageInput:
        low, high = processor_pixels(processor, self.default_pixels)
        grid = resized_grid(size, self.patch(model_config), self.merge(model_config), low, high)
        return ImageInput(size=(int(size[0]), int(size[1])), grid=grid, in_prompt=images_in_prompt)

    def layout(self, model_config: Any, image: ImageInput | tuple[int, int]) -> ImageLayout:
        image = ImageInput.of(image)
        if image.grid is None:  # a size alone: what the processor makes of it with the checkpoints' pixels
            image = self.image_input(model_config, image.picture_size(self.name))
        grid = tuple(int(v) for v in image.grid)
        return qwen_layout(grid, self.merge(model_config), self.cell(model_config), self.window(model_config))

    def vision_layer_count(self, model_config: Any) -> int:
        return int(model_config.vision_config.depth)

    def num_heads(self, model_config: Any) -> int:
        return int(model_config.vision_config.num_heads)

    def has_cls(self, model_config: Any) -> bool:
        return False

    def feature_layer(self, model_config: Any) -> int:
        return -1  # the merger reads the last block's output

    def check_config(self, model_config: Any) -> None:
        vision = model_config.vision_config
        if int(vision.hidden_size) % int(vision.num_heads):
            raise UnsupportedModelError(f"vision hidden_size {vision.hidden_size} does not split into "
                                        f"{vision.num_heads} heads")

    def encoder_shape(self, model_config: Any) -> EncoderShape:
        """Per 448 px region (a Qwen image is one crop of varying size; cost models scale by area)."""
        vision = model_config.vision_config
        merge = self.merge(model_config)
        patch = self.patch(model_config)
        return EncoderShape(int(vision.hidden_size), int(vision.intermediate_size),
                            self.vision_layer_count(model_config), (self.cell(model_config) * merge) ** 2,
                            int(vision.in_channels) * int(vision.temporal_patch_size) * patch * patch,
                            merge * merge, 0)

    def rotary_positions(self, model_config: Any, layout: ImageLayout) -> Tensor:
        """[3, L] (t, h, w) of each image token relative to the image's first position: t = 0,
        (h, w) its row and column in the LM-token map (``get_rope_index`` of a still image)."""
        rows, cols = layout.token_shape
        partition, slot = layout.positions // layout.tokens, layout.positions % layout.tokens
        y = (partition // layout.grid[1]) * rows + slot // cols
        x = (partition % layout.grid[1]) * cols + slot % cols
        return torch.stack([torch.zeros_like(y), y, x])


class Qwen25VLFamily(QwenVLFamily):
    name = "qwen2_5_vl"
    label = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)
    default_pixels = (3136, 12845056)  # Qwen/Qwen2.5-VL-*-Instruct preprocessor_config.json

    def window(self, model_config: Any) -> int:
        vision = model_config.vision_config
        return int(vision.window_size) // self.merge(model_config) // self.patch(model_config)

    def global_layers(self, model_config: Any) -> tuple[int, ...]:
        return tuple(int(i) for i in model_config.vision_config.fullatt_block_indexes)

    def check_config(self, model_config: Any) -> None:
        super().check_config(model_config)
        if not self.global_layers(model_config):
            raise UnsupportedModelError("fullatt_block_indexes is empty: no vision layer attends over the whole "
                                        "picture to score with")


class Qwen3VLFamily(QwenVLFamily):
    name = "qwen3_vl"
    label = "Qwen3-VL"
    model_types = ("qwen3_vl",)
    default_pixels = (65536, 16777216)  # Qwen/Qwen3-VL-*-Instruct: size shortest_edge / longest_edge
