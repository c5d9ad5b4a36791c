"""``Family``: what hired knows of one model family: geometry, and nothing of any backend.

A family reads the model config (a transformers config, which every engine loads) and answers:
how an image reaches the language model (:meth:`Family.layout`: the partitions HiRED reasons
about, their order, the language model's image tokens with unpadding, newlines and pooling), what
the vision encoder is (layers, heads, CLS token or not, feature layer, which layers attend over
the whole picture) and, for models whose rotary positions come from the image grid, each image
token's position. Where things live inside a model (modules, hooks, processors) is each
backend's table (``hired.backends.hf.table``, ``hired.backends.vllm.table``), and what a policy
needs (score layers and heads, counts) is resolved by :class:`hired.recipe.Recipe`.

A new family implements (as peft's tuners implement ``BaseTuner``):

- ``name``, ``label`` (its name for users) and ``model_types`` (the transformers ``model_type``
  values it reads);
- :meth:`layout` (required): an image's :class:`~hired.core.layout.ImageLayout` from the model
  config and what is known of the image (:class:`ImageInput`);
- :meth:`image_input`, where the processor makes more of a picture than its size (InternVL's
  tiles, Qwen's resized patch grid): what it makes of a picture of a given size;
- where the encoder is not CLIP-like: :meth:`has_cls`, :meth:`vision_layer_count`,
  :meth:`num_heads`, :meth:`feature_layer`, :meth:`global_layers`, :meth:`check_config`,
  :meth:`encoder_shape`;
- :meth:`rotary_positions` where the language model's positions of image tokens come from the
  image grid (3-D mRoPE).

Then one row per backend table and one preset record (``hired.presets``); the family contract
test (tests/test_family_contract.py) runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from hired.core.layout import ImageLayout
from hired.errors import ImageTokenMismatchError, UnsupportedModelError


@dataclass(frozen=True)
class ImageInput:
    """What a backend knows of one image before its layout.

    size: the picture's (height, width), where known. crops: the crops (tiles) the processor cut
    it into, where the model's inputs show it. grid: the (t, h, w) patch grid a native-resolution
    processor resized it to. in_prompt: how many images share its prompt (LLaVA-OneVision does
    not tile such images).
    """

    size: tuple[int, int] | None = None
    crops: int | None = None
    grid: tuple[int, int, int] | None = None
    in_prompt: int = 1

    @classmethod
    def of(cls, image: ImageInput | tuple[int, int] | Any) -> ImageInput:
        """An :class:`ImageInput` as given, or from a (height, width) pair."""
        if isinstance(image, ImageInput):
            return image
        height, width = image
        return cls(size=(int(height), int(width)))

    def picture_size(self, family: str) -> tuple[int, int]:
        """The picture's (height, width), which the layout of ``family`` needs (backends read it
        from the model's inputs, e.g. ``image_sizes``)."""
        if self.size is None:
            raise ImageTokenMismatchError(f"{family} needs each image's (height, width): pass image_sizes with "
                                          f"pixel_values (the processor returns both)")
        return int(self.size[0]), int(self.size[1])


@dataclass(frozen=True)
class EncoderShape:
    """The vision encoder's sizes per crop, for cost models (``hired bench``'s FLOPs): width,
    MLP width, layers built, tokens per crop (CLS included), input values per patch, and patch
    tokens merged into one projector input (InternVL's pixel shuffle 0.5: 4)."""

    hidden: int
    intermediate: int
    layers: int
    tokens: int
    patch_values: int
    pool: int = 1
    cls: int = 1


class Family:
    """Base of the model families: CLIP-like defaults (a CLS token, every layer global, features
    from ``vision_feature_layer``); see the module docstring for what a family implements."""

    name: str = ""
    label: str = ""  # how users name it ("LLaVA-NeXT"), in help texts and reports
    model_types: tuple[str, ...] = ()

    # -- an image's layout ------------------------------------------------------------------------
    def layout(self, model_config: Any, image: ImageInput | tuple[int, int]) -> ImageLayout:
        """How an image reaches the language model."""
        raise NotImplementedError

    def image_input(self, model_config: Any, size: tuple[int, int], images_in_prompt: int = 1,
                    processor: Any = None) -> ImageInput:
        """What the processor makes of a picture of ``size`` = (height, width) in a prompt of
        ``images_in_prompt`` images (``processor``: its image processor or settings, where they
        decide the crops or the resize)."""
        return ImageInput(size=(int(size[0]), int(size[1])), in_prompt=images_in_prompt)

    def tokens_per_partition(self, model_config: Any) -> int:
        vision = model_config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    # -- the vision encoder -----------------------------------------------------------------------
    def vision_layer_count(self, model_config: Any) -> int:
        return int(model_config.vision_config.num_hidden_layers)

    def encoder_shape(self, model_config: Any) -> EncoderShape:
        """The encoder's sizes per crop (CLIP-like: square crops of ``image_size``, no pooling)."""
        vision = model_config.vision_config
        cls = int(self.has_cls(model_config))
        return EncoderShape(int(vision.hidden_size), int(vision.intermediate_size),
                            self.vision_layer_count(model_config),
                            self.tokens_per_partition(model_config) + cls,
                            int(getattr(vision, "num_channels", 3)) * int(vision.patch_size) ** 2, 1, cls)

    def num_heads(self, model_config: Any) -> int:
        return int(model_config.vision_config.num_attention_heads)

    def has_cls(self, model_config: Any) -> bool:
        """Whether the vision encoder prepends a CLS token (dropped from the features, never scored)."""
        return True

    def feature_layer(self, model_config: Any) -> int:
        """The ``hidden_states`` index whose features the language model gets."""
        layer = model_config.vision_feature_layer
        return layer[-1] if isinstance(layer, (list, tuple)) else layer

    def global_layers(self, model_config: Any) -> tuple[int, ...] | None:
        """The encoder layers (0-based) whose attention spans the whole picture; ``None``: all.
        Scores are read only there (a windowed layer's attention is local)."""
        return None

    def check_config(self, model_config: Any) -> None:
        """UnsupportedModelError naming what hired cannot read in this config (the one feature
        selection check: the CLS token dropped from the features)."""
        strategy = getattr(model_config, "vision_feature_select_strategy", "default")
        if strategy != "default":
            raise UnsupportedModelError(
                f"vision_feature_select_strategy={strategy!r} is not supported; hired needs 'default' (CLS dropped)"
            )

    # -- positions ----------------------------------------------------------------------------------
    def rotary_positions(self, model_config: Any, layout: ImageLayout) -> Tensor | None:
        """[3, L] the language model's (t, h, w) rotary positions of the image's tokens relative to
        the image's first position, where the model derives them from the image grid (mRoPE);
        ``None`` for models that number image tokens like text."""
        return None
