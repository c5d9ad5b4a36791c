"""``Family``: what hired must know of one model family, and nothing of any backend's plumbing.

A family names its model types and transformers classes, reads the vision tower's geometry from
the model config (layers, heads, CLS token, feature layer), computes an image's partitions and
their :class:`~hired.core.layout.ImageLayout` from its size alone, and with it
:meth:`Family.planned_tokens`. For the transformers backend it also says how to reach the vision
layers and how to get the packed image features, through the model's own methods.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from hired.config import HiREDConfig
from hired.core.layout import ImageLayout
from hired.core.plan import planned_tokens
from hired.core.scoring import ScoreRequest
from hired.errors import ConfigError, ImageTokenMismatchError, UnsupportedModelError
from hired.policies.registry import is_count_known, scoring_of


def processor_options(cls: type) -> set[str]:
    """The options a processor class takes besides its sub-processors (saved in processor_config.json)."""
    import inspect

    return set(inspect.signature(cls.__init__).parameters) - {
        "self", "image_processor", "tokenizer", "video_processor", "chat_template", "args", "kwargs"}


@lru_cache(maxsize=None)
def without_video_processor(cls: type) -> type:
    """``cls`` (a transformers processor class) that accepts ``video_processor=None``: without
    torchvision its class check of the (absent) video processor fails, and images need none. It
    saves as ``cls`` does, minus the video processor (:func:`processor_without_video` loads it)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return cls.check_argument_for_proper_class(self, argument_name, argument)

    def save_pretrained(self, save_directory, **kwargs):
        if self.video_processor is not None:
            return cls.save_pretrained(self, save_directory, **kwargs)
        import json
        from pathlib import Path

        self.image_processor.save_pretrained(save_directory)
        self.tokenizer.save_pretrained(save_directory)
        options = {name: getattr(self, name) for name in sorted(processor_options(cls)) if hasattr(self, name)}
        options = {k: v for k, v in options.items() if isinstance(v, (str, int, float, bool, list, dict))}
        config = {"processor_class": cls.__name__, **options}
        (Path(save_directory) / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if self.chat_template:
            (Path(save_directory) / "chat_template.jinja").write_text(self.chat_template)
        return [str(save_directory)]

    return type(cls.__name__, (cls,), {"check_argument_for_proper_class": check_argument_for_proper_class,
                                       "save_pretrained": save_pretrained, "__module__": cls.__module__})


def processor_without_video(model_id: str, **kwargs: Any) -> Any:
    """A checkpoint's processor built from its image processor, tokenizer and saved processor
    options, with no video processor: transformers' video processors need torchvision, images
    do not (LLaVA-OneVision's processor loads one even for images)."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.processing_utils import ProcessorMixin

    options, _ = ProcessorMixin.get_processor_dict(model_id, **kwargs)
    name = options.get("processor_class")
    base = getattr(transformers, name, None) if isinstance(name, str) else None
    if base is None:
        raise UnsupportedModelError(f"{model_id}: its processor_class {name!r} is not a transformers processor")
    accepted = processor_options(base) | {"chat_template"}
    return without_video_processor(base)(
        image_processor=AutoImageProcessor.from_pretrained(model_id, **kwargs),
        tokenizer=AutoTokenizer.from_pretrained(model_id, **kwargs),
        video_processor=None,
        **{key: value for key, value in options.items() if key in accepted},
    )


class Family:
    """Base of the model families; subclasses set the names and implement :meth:`layout` and
    :meth:`image_features`."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    needs_image_sizes: bool = False  # forward needs image_sizes to know each image's partitions

    # -- transformers classes ---------------------------------------------------------------
    def model_class(self) -> type:
        """The transformers class that loads this family's checkpoints."""
        raise NotImplementedError

    # -- geometry from the config alone -------------------------------------------------------
    def tokens_per_partition(self, model_config: Any) -> int:
        vision = model_config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    def layout(self, model_config: Any, image_size: tuple[int, int]) -> ImageLayout:
        """How an image of ``image_size`` = (height, width) reaches the language model."""
        raise NotImplementedError

    def layouts(self, model_config: Any, image_sizes: list[tuple[int, int]], **encoder_kwargs: Any
                ) -> list[ImageLayout]:
        """The layouts of a batch's images, given the encoder options the model's call carries
        (LLaVA-OneVision: ``batch_num_images``, which decides whether an image is tiled)."""
        return [self.layout(model_config, size) for size in image_sizes]

    def layout_in_prompt(self, model_config: Any, image_size: tuple[int, int], images_in_prompt: int) -> ImageLayout:
        """The layout of an image in a prompt of ``images_in_prompt`` images (the same, unless the
        family lays out images that share a prompt otherwise)."""
        return self.layout(model_config, image_size)

    def planned_tokens(self, model_config: Any, image_size: tuple[int, int], config: HiREDConfig,
                       images_in_prompt: int = 1) -> int | None:
        """Image tokens (visual + newline) the language model gets for one image under ``config``
        in a prompt of ``images_in_prompt`` images; ``None`` where the count depends on the content."""
        layout = self.layout_in_prompt(model_config, image_size, images_in_prompt)
        return planned_tokens(layout, config, is_count_known(config))

    def vision_layer_count(self, model_config: Any) -> int:
        return int(model_config.vision_config.num_hidden_layers)

    def num_heads(self, model_config: Any) -> int:
        return int(model_config.vision_config.num_attention_heads)

    def has_cls(self, model_config: Any) -> bool:
        """Whether the vision encoder prepends a CLS token (dropped from the features, never scored)."""
        return True

    def feature_layer(self, model_config: Any) -> int:
        """The ``hidden_states`` index whose features the language model gets."""
        layer = model_config.vision_feature_layer
        return layer[-1] if isinstance(layer, (list, tuple)) else layer

    def scoring_layers(self, model_config: Any, config: HiREDConfig) -> tuple[int, int]:
        """(init, final) encoder-layer indices, 0-based: phase 1's early layer and the layer whose
        CLS attention ranks tokens (by default the one producing the model's features, or the
        encoder's last layer for policies whose reference scores there)."""
        count = self.vision_layer_count(model_config)

        def index(value: int, name: str) -> int:
            if not -count <= value < count:
                raise ConfigError(f"{name}={value} is out of range for a {count}-layer vision tower")
            return value % count

        init = index(config.init_layer, "init_layer")
        if config.final_layer is not None:
            return init, index(config.final_layer, "final_layer")
        if scoring_of(config.method).layer == "last":  # e.g. PruMerge's reference: the encoder's last layer
            return init, count - 1
        hidden = self.feature_layer(model_config)
        final = count + hidden if hidden < 0 else hidden - 1  # the layer whose output is hidden_states[hidden]
        if not 0 <= final < count:
            raise ConfigError(f"vision_feature_layer={hidden} has no attention layer to score with")
        return init, final

    def score_requests(self, model_config: Any, config: HiREDConfig) -> dict[str, ScoreRequest]:
        """The two CLS-attention rows a backend records: "init" (phase 1) and "final" (ranking),
        with the policy's heads (one full-width head where it asks) and dtype (the model's own in
        official mode, as the published code; float32 otherwise)."""
        init, final = self.scoring_layers(model_config, config)
        heads = self.num_heads(model_config)
        dtype = None if config.allocation == "official" else torch.float32
        kind = self.score_kind(model_config, config)
        return {"init": ScoreRequest(init, heads, dtype, kind),
                "final": ScoreRequest(final, 1 if scoring_of(config.method).single_head else heads, dtype, kind)}

    def score_kind(self, model_config: Any, config: HiREDConfig) -> str:
        """``config.score``, or by default "cls" where the encoder has a CLS token and "received"
        where it has none; "cls" without a CLS token is refused."""
        has_cls = self.has_cls(model_config)
        kind = config.score or ("cls" if has_cls else "received")
        if kind == "cls" and not has_cls:
            raise UnsupportedModelError(
                "this model's vision encoder has no CLS token to score with; use score='received'"
            )
        return kind

    # -- transformers models ------------------------------------------------------------------
    def check_model(self, model: nn.Module) -> None:
        """UnsupportedModelError naming what hired cannot read in ``model``."""
        strategy = model.config.vision_feature_select_strategy
        if strategy != "default":
            raise UnsupportedModelError(
                f"vision_feature_select_strategy={strategy!r} is not supported; hired needs 'default' (CLS dropped)"
            )
        layers = self.vision_layers(model)
        attn = layers[0].self_attn
        if not (hasattr(attn, "q_proj") and hasattr(attn, "k_proj")):
            raise UnsupportedModelError(f"vision attention {type(attn).__name__} has no q_proj/k_proj to hook")

    def qk_modules(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        """The modules whose outputs are one encoder layer's queries and keys, as attention uses them."""
        return layer.self_attn.q_proj, layer.self_attn.k_proj

    def vision_layers(self, model: nn.Module) -> nn.ModuleList:
        """The vision encoder's layers (CLIP-style: a CLS token and q/k projections)."""
        tower = model.model.vision_tower
        embeddings = getattr(tower, "embeddings", None)
        layers = getattr(getattr(tower, "encoder", None), "layers", None)
        if layers is None or not hasattr(embeddings, "class_embedding"):
            raise UnsupportedModelError(
                f"vision tower {type(tower).__name__} has no CLS token; hired needs a CLIP-style ViT"
            )
        return layers

    def projector(self, model: nn.Module) -> nn.Module:
        """The module that maps vision features [crops, N, D_vision] to the language model's width;
        merging policies merge its input, as their reference code merges CLIP hidden states."""
        return model.model.multi_modal_projector

    def image_sizes(self, pixel_values: Tensor, image_sizes: Tensor | None) -> list[tuple[int, int]]:
        """(height, width) of each image of a batch."""
        if image_sizes is None:
            if self.needs_image_sizes:
                raise ImageTokenMismatchError(
                    f"{self.name} needs image_sizes with pixel_values (the processor returns both)"
                )
            height, width = pixel_values.shape[-2:]
            return [(int(height), int(width))] * pixel_values.shape[0]
        return [tuple(int(v) for v in size) for size in image_sizes.tolist()]

    def pooler_output(self, features: list[Tensor]) -> Any:
        """The kept features (one [k_i, D] tensor per image) as the model's forward takes them
        in ``mm_encoder_outputs["image"].pooler_output`` (LLaVA-NeXT: the list itself)."""
        return features

    def load_processor(self, model_id: str, model_config: Any, **kwargs: Any) -> Any:
        """The processor of a checkpoint (hub id or folder), as transformers loads it; where its
        video processor cannot load (it needs torchvision), the same processor without one
        (:func:`processor_without_video`)."""
        from transformers import AutoProcessor
        from transformers.utils import is_torchvision_available

        try:
            return AutoProcessor.from_pretrained(model_id, **kwargs)
        except (ImportError, ValueError):  # transformers' "requires torchvision", as either
            if is_torchvision_available():
                raise
            return processor_without_video(model_id, **kwargs)

    def prepare_processor(self, processor: Any, model_config: Any) -> Any:
        """The processor a loaded checkpoint is used with (some families need more from it)."""
        return processor

    def image_features(
        self, model: nn.Module, pixel_values: Tensor, image_sizes: Tensor | None, **kwargs: Any
    ) -> list[Tensor]:
        """Each image's features as the unmodified model packs them ([L_i, D], layout order)."""
        raise NotImplementedError
