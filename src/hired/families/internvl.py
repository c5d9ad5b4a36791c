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

The forward gets only the flat tiles: the grid of an image is not in ``pixel_values`` (6 tiles
may be 2x3, 3x2, 1x6 or 6x1), so the patched ``forward`` / ``generate`` need ``image_sizes``
(height, width) per image, as LLaVA-NeXT's; :func:`processor_with_image_sizes` makes the
processor return them. The tile limits are the processor's (``min_patches`` / ``max_patches``,
default 1 / 12); a processor set otherwise is told to the family through the model config
(:func:`tile_limits`, which :func:`hired.from_pretrained` sets from the loaded processor).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from hired.core.layout import ImageLayout
from hired.errors import ImageTokenMismatchError, UnsupportedModelError
from hired.families.base import Family, without_video_processor

MIN_TILES, MAX_TILES = 1, 12  # GotOcr2ImageProcessor's defaults, which the InternVL checkpoints use


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


def tile_limits(model_config: Any) -> tuple[int, int]:
    """(min, max) tiles of the processor: ``model_config.min_patches`` / ``max_patches`` where
    set (hired sets them from the processor it loads), else the image processor's defaults."""
    return int(getattr(model_config, "min_patches", MIN_TILES)), int(getattr(model_config, "max_patches", MAX_TILES))


def tile_grid(image_size: tuple[int, int], tile: tuple[int, int], min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """(rows, cols) of tiles for an image of (height, width), as the processor chooses them."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    if max_tiles <= 1:  # the processor does not crop: one tile
        return 1, 1
    cols, rows = get_optimal_tiled_canvas(tuple(image_size), tuple(tile), min_tiles, max_tiles)
    return int(rows), int(cols)


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
    model_types = ("internvl",)
    needs_image_sizes = True

    def model_class(self) -> type:
        from transformers import InternVLForConditionalGeneration

        return InternVLForConditionalGeneration

    def side(self, model_config: Any) -> int:
        """ViT patches per tile side (448 / 14 = 32)."""
        vision = model_config.vision_config
        (h, w), (ph, pw) = _pair(vision.image_size), _pair(vision.patch_size)
        if h != w or ph != pw or h % ph:
            raise UnsupportedModelError(f"InternVL tiles of {h}x{w} px, patch {ph}x{pw}: hired needs square tiles")
        return h // ph

    def tokens_per_partition(self, model_config: Any) -> int:
        return int(shuffle_groups(self.side(model_config), float(model_config.downsample_ratio)).shape[0])

    def layout(self, model_config: Any, image_size: tuple[int, int]) -> ImageLayout:
        tile = _pair(model_config.vision_config.image_size)
        grid = tile_grid((int(image_size[0]), int(image_size[1])), tile, *tile_limits(model_config))
        return internvl_layout(self.side(model_config), float(model_config.downsample_ratio), grid)

    def check_model(self, model: nn.Module) -> None:
        config = model.config
        strategy = config.vision_feature_select_strategy
        if strategy != "default":
            raise UnsupportedModelError(
                f"vision_feature_select_strategy={strategy!r} is not supported; hired needs 'default' (CLS dropped)"
            )
        side = self.side(config)
        ratio = float(config.downsample_ratio)
        if side * ratio != int(side * ratio):
            raise UnsupportedModelError(f"downsample_ratio={ratio} does not divide {side} patches per tile side")
        layers = self.vision_layers(model)
        attn = getattr(layers[0], "attention", None)
        if not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "q_norm", "k_norm")):
            raise UnsupportedModelError(
                f"InternVL vision layer {type(layers[0]).__name__} has no attention with q_proj/k_proj/q_norm/k_norm "
                "to hook"
            )

    def vision_layers(self, model: nn.Module) -> nn.ModuleList:
        tower = model.model.vision_tower
        layers = getattr(getattr(tower, "encoder", None), "layer", None)
        if layers is None or not hasattr(getattr(tower, "embeddings", None), "cls_token"):
            raise UnsupportedModelError(
                f"vision tower {type(tower).__name__} has no encoder.layer or no CLS token (embeddings.cls_token); "
                "hired reads InternViT as transformers' InternVLVisionModel builds it"
            )
        return layers

    def qk_modules(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        # q and K as attention uses them: after the q/k RMS norms (identities where use_qk_norm is off)
        return layer.attention.q_norm, layer.attention.k_norm

    def image_features(self, model: nn.Module, pixel_values: Tensor, image_sizes: Tensor | None,
                       **kwargs: Any) -> list[Tensor]:
        counts = [self.layout(model.config, size).partitions for size in self.image_sizes(pixel_values, image_sizes)]
        if sum(counts) != pixel_values.shape[0]:
            min_tiles, max_tiles = tile_limits(model.config)
            raise ImageTokenMismatchError(
                f"the image sizes give {sum(counts)} tiles (min_patches={min_tiles}, max_patches={max_tiles}) but "
                f"pixel_values holds {pixel_values.shape[0]}: pass each image's (height, width) as image_sizes, and "
                "set model.config.min_patches / max_patches to the processor's if it is not at its defaults"
            )
        out = model.model.get_image_features(pixel_values=pixel_values, return_dict=True, **kwargs)
        features = out.pooler_output  # [tiles, 256, D], the model's crop order
        return [f.flatten(0, 1) for f in features.split(counts)]

    def pooler_output(self, features: list[Tensor]) -> Tensor:
        # InternVL's forward scatters pooler_output.flatten(0, 1) over the placeholders: one row
        return torch.cat(features)[None]

    def image_sizes(self, pixel_values: Tensor, image_sizes: Tensor | None) -> list[tuple[int, int]]:
        if image_sizes is None:
            raise ImageTokenMismatchError(
                "InternVL needs image_sizes ((height, width) per image) with pixel_values: the flat tiles do not "
                "tell each image's grid (6 tiles may be 2x3, 3x2, 1x6 or 6x1). The processor does not return them: "
                "wrap it with hired.families.internvl.processor_with_image_sizes (hired.from_pretrained does)"
            )
        sizes = image_sizes.tolist() if isinstance(image_sizes, Tensor) else list(image_sizes)
        return [(int(h), int(w)) for h, w in sizes]

    def prepare_processor(self, processor: Any, model_config: Any) -> Any:
        """The processor returning ``image_sizes``; its tile limits copied into the model config."""
        image_processor = processor.image_processor
        if not getattr(image_processor, "crop_to_patches", True):
            model_config.max_patches = 1
        else:
            model_config.min_patches = int(getattr(image_processor, "min_patches", MIN_TILES))
            model_config.max_patches = int(getattr(image_processor, "max_patches", MAX_TILES))
        return processor_with_image_sizes(processor)


@lru_cache(maxsize=1)
def _processor_class():
    from transformers import InternVLProcessor

    class InternVLProcessorWithSizes(without_video_processor(InternVLProcessor)):
        """InternVL's processor that also returns ``image_sizes`` [images, 2] (height, width), which
        the patched model needs to know each image's tile grid (and accepts no video processor)."""

        def __call__(self, images=None, text=None, videos=None, **kwargs):
            out = super().__call__(images=images, text=text, videos=videos, **kwargs)
            if images is not None:
                layout = kwargs.get("input_data_format")
                sizes = [image_size_of(image, layout) for image in flatten_images(images)]
                return_tensors = kwargs.get("return_tensors")
                out["image_sizes"] = torch.tensor(sizes) if return_tensors == "pt" else sizes
            return out

    return InternVLProcessorWithSizes


def flatten_images(images: Any) -> list:
    if isinstance(images, (list, tuple)):
        return [leaf for item in images for leaf in flatten_images(item)]
    return [images]


def image_size_of(image: Any, input_data_format: Any = None) -> tuple[int, int]:
    """(height, width) of a PIL image, an array or a tensor, read as the image processor reads it:
    a PIL image by its size, an array's channel axis as given or inferred as transformers infers it
    (a 1 x 100 RGB array is ambiguous there too)."""
    import numpy as np
    from PIL import Image
    from transformers.image_utils import ChannelDimension, infer_channel_dimension_format

    if isinstance(image, Image.Image):
        return int(image.height), int(image.width)
    array = image.numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim == 2:
        return int(array.shape[0]), int(array.shape[1])
    if input_data_format is None:
        input_data_format = infer_channel_dimension_format(array, num_channels=(1, 3, 4))
    height, width = array.shape[-2:] if ChannelDimension(input_data_format) == ChannelDimension.FIRST \
        else array.shape[-3:-1]
    return int(height), int(width)


def processor_with_image_sizes(processor: Any) -> Any:
    """An InternVL processor (loaded or built) that also returns ``image_sizes``."""
    cls = _processor_class()
    if isinstance(processor, cls):
        return processor
    return cls(
        image_processor=processor.image_processor, tokenizer=processor.tokenizer,
        video_processor=getattr(processor, "video_processor", None), image_seq_length=processor.image_seq_length,
        chat_template=getattr(processor, "chat_template", None),
    )
