"""Where things live in each family's transformers model: one row per family, as data.

The patch (:mod:`hired.backends.hf.patch`) is the same for every family; a row tells it the model
class, the vision layers and the q/K source of each (:mod:`hired.backends.hf.hooks`), the
projector (merging policies merge its input), what the call tells of each image
(:class:`~hired.families.ImageInput`), how to run the model's own image encoding and how the
model takes precomputed image features back, and how to load the family's processor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformers.modeling_outputs import BaseModelOutputWithPooling

from hired.backends.hf.hooks import QKSource, pair_source
from hired.backends.hf.processors import processor_with_image_sizes
from hired.core.recorder import ScoreRecorder
from hired.errors import ImageTokenMismatchError, InputError, UnsupportedModelError
from hired.families import FAMILIES, Family, ImageInput

ImageCall = dict[str, Any]  # the image arguments of one call: pixel_values, image_sizes, input_ids, options


def clip_layers(model: nn.Module) -> nn.ModuleList:
    """CLIP's encoder layers (a CLS token and q/k projections)."""
    tower = model.model.vision_tower
    layers = getattr(getattr(tower, "encoder", None), "layers", None)
    if layers is None or not hasattr(getattr(tower, "embeddings", None), "class_embedding"):
        raise UnsupportedModelError(
            f"vision tower {type(tower).__name__} has no CLS token; hired needs a CLIP-style ViT"
        )
    return layers


def siglip_or_clip_layers(model: nn.Module) -> nn.ModuleList:
    tower = model.model.vision_tower
    layers = getattr(getattr(getattr(tower, "vision_model", tower), "encoder", None), "layers", None)
    if layers is None:
        raise UnsupportedModelError(f"vision tower {type(tower).__name__} has no encoder.layers to hook")
    return layers


def internvit_layers(model: nn.Module) -> nn.ModuleList:
    tower = model.model.vision_tower
    layers = getattr(getattr(tower, "encoder", None), "layer", None)
    if layers is None or not hasattr(getattr(tower, "embeddings", None), "cls_token"):
        raise UnsupportedModelError(
            f"vision tower {type(tower).__name__} has no encoder.layer or no CLS token (embeddings.cls_token); "
            "hired reads InternViT as transformers' InternVLVisionModel builds it")
    return layers


def self_attn_qk(layer: nn.Module) -> QKSource:
    attn = layer.self_attn
    if not (hasattr(attn, "q_proj") and hasattr(attn, "k_proj")):
        raise UnsupportedModelError(f"vision attention {type(attn).__name__} has no q_proj/k_proj to hook")
    return pair_source(attn.q_proj, attn.k_proj)


def internvit_qk(layer: nn.Module) -> QKSource:
    attn = getattr(layer, "attention", None)
    if not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "q_norm", "k_norm")):
        raise UnsupportedModelError(f"InternVL vision layer {type(layer).__name__} has no attention with "
                                    "q_proj/k_proj/q_norm/k_norm to hook")
    return pair_source(attn.q_norm, attn.k_norm)  # q and K after the q/k norms (identities when off), as used


def qwen_blocks(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(getattr(model.model, "visual", None), "blocks", None)
    if blocks is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no model.visual.blocks to hook")
    return blocks


def qwen_qk(block: nn.Module) -> QKSource:
    """q and K of a Qwen ViT block as its attention uses them: the fused ``qkv`` output after the
    2-D rotary embedding (``position_embeddings`` of the attention call), per image (its
    ``cu_seqlens``: a global layer's segments are the images), in the order the block holds the
    patches (Qwen2.5-VL's window order, which the layout's ``sources`` undo)."""
    attn = getattr(block, "attn", None)
    if not hasattr(attn, "qkv"):
        raise UnsupportedModelError(f"Qwen vision block {type(block).__name__} has no attn.qkv to hook")

    def attach(recorder: ScoreRecorder, layer: int) -> list[RemovableHandle]:
        call: dict[str, Any] = {}

        def before(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            call["cu_seqlens"] = kwargs.get("cu_seqlens", args[1] if len(args) > 1 else None)
            call["position_embeddings"] = kwargs.get("position_embeddings", args[2] if len(args) > 2 else None)

        def after(_module: nn.Module, _inputs: tuple, qkv: Tensor) -> None:
            cos, sin = call["position_embeddings"]
            q, k, _ = qkv.reshape(qkv.shape[0], 3, attn.num_heads, -1).unbind(1)
            q, k = rotary_vision(q, k, cos, sin)
            segments = torch.diff(call["cu_seqlens"]).tolist()
            recorder.record(layer, q.flatten(1), k.flatten(1), segments)

        return [attn.register_forward_pre_hook(before, with_kwargs=True), attn.qkv.register_forward_hook(after)]

    return attach


def rotary_vision(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """The 2-D rotary embedding of Qwen's ViT on [T, H, d] q and K (``apply_rotary_pos_emb_vision``)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    return apply_rotary_pos_emb_vision(q, k, cos, sin)


def qwen_images(model: nn.Module, call: ImageCall) -> list[ImageInput]:
    """Each image's patch grid from ``image_grid_thw``; videos are refused (hired drops image tokens)."""
    if call.get("pixel_values_videos") is not None or call.get("video_grid_thw") is not None:
        raise InputError("hired drops image tokens only; pass videos to the unpatched model (hired.remove)")
    grids = call.get("image_grid_thw")
    if grids is None:
        raise ImageTokenMismatchError("Qwen-VL needs image_grid_thw with pixel_values (the processor returns both)")
    return [ImageInput(grid=(int(t), int(h), int(w))) for t, h, w in grids.tolist()]


def qwen_call(call: ImageCall) -> ImageCall:
    return {"pixel_values": call["pixel_values"], "image_grid_thw": call["image_grid_thw"]}


def encode_qwen(model: nn.Module, call: ImageCall, crops: list[int]) -> list[Tensor]:
    out = model.model.get_image_features(return_dict=True, **qwen_call(call))
    return list(out.pooler_output)


def encode_deepstack(model: nn.Module, call: ImageCall, crops: list[int]) -> list[tuple[Tensor, ...]]:
    """Qwen3-VL: each image's main features and its deepstack features, streams of one token axis."""
    out = model.model.get_image_features(return_dict=True, **qwen_call(call))
    return [(main, *deep) for main, *deep in zip(out.pooler_output, *out.deepstack_features)]


def as_deepstack(features: list[tuple[Tensor, ...]]) -> BaseModelOutputWithPooling:
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    streams = list(zip(*features))
    return BaseModelOutputWithDeepstackFeatures(pooler_output=list(streams[0]),
                                                deepstack_features=[list(s) for s in streams[1:]])


def qwen_rope_index(model: nn.Module, kwargs: dict[str, Any], call: ImageCall) -> tuple[Tensor, Tensor]:
    """The full prompt's mRoPE positions [3, B, L] and deltas [B, 1], from the model's own
    ``get_rope_index`` (what the unmodified model uses)."""
    input_ids = kwargs["input_ids"]
    types = kwargs.get("mm_token_type_ids")
    if types is None:
        types = (input_ids == model.config.image_token_id).int()
    return model.model.get_rope_index(input_ids, types, image_grid_thw=call["image_grid_thw"],
                                      attention_mask=kwargs.get("attention_mask"))


def set_rope_deltas(model: nn.Module, deltas: Tensor) -> None:
    model.model.rope_deltas = deltas


@dataclass(frozen=True)
class Rope:
    """Where a model's language positions come from the image grid (mRoPE): ``index`` gives the
    unmodified model's positions of the full prompt ([R, B, L]) and its rope deltas ([B, 1]);
    ``set_deltas`` stores the deltas the model continues decoding with."""

    index: Callable[[nn.Module, dict[str, Any], ImageCall], tuple[Tensor, Tensor]]
    set_deltas: Callable[[nn.Module, Tensor], None]


QWEN_ARGS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def sizes_of(call: ImageCall, count: int) -> list[tuple[int, int] | None]:
    """Each image's (height, width) from the call's ``image_sizes`` (``None`` each without it)."""
    sizes = call.get("image_sizes")
    if sizes is None:
        return [None] * count
    rows = sizes.tolist() if isinstance(sizes, Tensor) else list(sizes)
    if len(rows) != count:
        raise ImageTokenMismatchError(f"image_sizes has {len(rows)} rows for {count} images")
    return [(int(h), int(w)) for h, w in rows]


def per_pixel_row(model: nn.Module, call: ImageCall) -> list[ImageInput]:
    """One image per row of ``pixel_values`` ([images, crops, C, H, W] or [images, C, H, W])."""
    count = call["pixel_values"].shape[0]
    batch_num = call.get("batch_num_images")
    in_prompt = [1] * count
    if batch_num is not None:  # LLaVA-OneVision: images that share a prompt are not tiled
        counts = [int(n) for n in (batch_num.tolist() if isinstance(batch_num, Tensor) else batch_num)]
        if sum(counts) != count:
            raise ImageTokenMismatchError(f"batch_num_images {counts} adds up to {sum(counts)} images, but "
                                          f"{count} came")
        in_prompt = [n for n in counts for _ in range(n)]
    return [ImageInput(size=size, in_prompt=n) for size, n in zip(sizes_of(call, count), in_prompt)]


def internvl_images(model: nn.Module, call: ImageCall) -> list[ImageInput]:
    """Each image's tile count from its run of placeholders (256 per tile, thumbnail included),
    its size from ``image_sizes``."""
    input_ids = call.get("input_ids")
    if input_ids is None:
        raise ImageTokenMismatchError("InternVL: hired reads each image's tiles from its placeholders; pass input_ids")
    is_image = (input_ids == model.config.image_token_id).flatten().long()
    starts = torch.nonzero(torch.diff(torch.cat([is_image.new_zeros(1), is_image])) == 1).flatten()
    ends = torch.nonzero(torch.diff(torch.cat([is_image, is_image.new_zeros(1)])) == -1).flatten() + 1
    per_tile = FAMILIES["internvl"].tokens_per_partition(model.config)
    runs = (ends - starts).tolist()
    if any(run % per_tile for run in runs) or sum(runs) != per_tile * call["pixel_values"].shape[0]:
        raise ImageTokenMismatchError(
            f"the prompt's image placeholder runs {runs} do not match {call['pixel_values'].shape[0]} tiles of "
            f"{per_tile} tokens: give one image token per image and let the processor expand it")
    crops = [run // per_tile for run in runs]
    return [ImageInput(size=size, crops=n) for size, n in zip(sizes_of(call, len(crops)), crops)]


def encode_listed(model: nn.Module, call: ImageCall) -> list[Tensor]:
    """The model's own ``get_image_features``: one packed [L_i, D] tensor per image."""
    out = model.model.get_image_features(return_dict=True, **call)
    return list(out.pooler_output)


def encode_tiles(model: nn.Module, call: ImageCall, crops: list[int]) -> list[Tensor]:
    out = model.model.get_image_features(return_dict=True, **call)
    return [f.flatten(0, 1) for f in out.pooler_output.split(crops)]  # [tiles, 256, D] -> [L_i, D]


def as_list(features: list[Tensor]) -> BaseModelOutputWithPooling:
    return BaseModelOutputWithPooling(pooler_output=features)


def as_one_row(features: list[Tensor]) -> BaseModelOutputWithPooling:
    # InternVL's forward scatters pooler_output.flatten(0, 1) over the placeholders: one row
    return BaseModelOutputWithPooling(pooler_output=torch.cat(features)[None])


def same_processor(processor: Any, model_config: Any) -> Any:
    return processor


def internvl_processor(processor: Any, model_config: Any) -> Any:
    return processor_with_image_sizes(processor)


@dataclass(frozen=True)
class HFModel:
    """One family's transformers model.

    model_class: the transformers class (by name). vision_layers: the encoder's layers. qk: a
    layer's q/K source. projector: the module whose input merging policies merge
    (``[crops, N, D]``). image_inputs: what the call tells of each image. encode: the model's own
    image encoding with the call's image arguments (``pixel_values``, ``image_sizes``, encoder
    options), one packed [L_i, D] (or tuple of streams) per image in the model's packing, given the
    images' layouts' crops. encoder_outputs: the kept features as ``mm_encoder_outputs["image"]``.
    image_args: the call's arguments that describe images (popped before the language model).
    prepare_processor: the processor a loaded checkpoint is used with. packed_projector: the
    projector takes every image's tokens packed as rows ``[sum L_i, D]`` (Qwen's merger MLP), not
    ``[crops, N, D]``. rope: where language positions come from the image grid (mRoPE), how to
    keep the unmodified model's positions for the kept tokens.
    """

    model_class: str
    vision_layers: Callable[[nn.Module], nn.ModuleList]
    qk: Callable[[nn.Module], QKSource]
    image_inputs: Callable[[nn.Module, ImageCall], list[ImageInput]]
    encode: Callable[[nn.Module, ImageCall, list[int]], list]
    encoder_outputs: Callable[[list], BaseModelOutputWithPooling] = as_list
    projector: Callable[[nn.Module], nn.Module] = lambda model: model.model.multi_modal_projector
    image_args: tuple[str, ...] = ("pixel_values", "image_sizes", "vision_feature_layer",
                                   "vision_feature_select_strategy", "batch_num_images")
    prepare_processor: Callable[[Any, Any], Any] = same_processor
    packed_projector: bool = False
    rope: Rope | None = None

    def transformers_class(self) -> type:
        import transformers

        return getattr(transformers, self.model_class)

    def check(self, model: nn.Module) -> None:
        """UnsupportedModelError naming what hired cannot reach in ``model``."""
        layers = self.vision_layers(model)
        self.qk(layers[0])


HF_MODELS: dict[str, HFModel] = {
    "llava_next": HFModel("LlavaNextForConditionalGeneration", clip_layers, self_attn_qk, per_pixel_row,
                          lambda model, call, crops: encode_listed(model, call)),
    "llava": HFModel("LlavaForConditionalGeneration", clip_layers, self_attn_qk, per_pixel_row,
                     lambda model, call, crops: encode_listed(model, {k: v for k, v in call.items()
                                                                      if k != "image_sizes"})),
    "internvl": HFModel("InternVLForConditionalGeneration", internvit_layers, internvit_qk, internvl_images,
                        encode_tiles, as_one_row, prepare_processor=internvl_processor),
    "llava_onevision": HFModel("LlavaOnevisionForConditionalGeneration", siglip_or_clip_layers, self_attn_qk,
                               per_pixel_row, lambda model, call, crops: encode_listed(model, call)),
    "qwen2_5_vl": HFModel("Qwen2_5_VLForConditionalGeneration", qwen_blocks, qwen_qk, qwen_images, encode_qwen,
                          projector=lambda model: model.model.visual.merger.mlp, image_args=QWEN_ARGS,
                          packed_projector=True, rope=Rope(qwen_rope_index, set_rope_deltas)),
    "qwen3_vl": HFModel("Qwen3VLForConditionalGeneration", qwen_blocks, qwen_qk, qwen_images, encode_deepstack,
                        as_deepstack, projector=lambda model: model.model.visual.merger.linear_fc1,
                        image_args=QWEN_ARGS, packed_projector=True, rope=Rope(qwen_rope_index, set_rope_deltas)),
}


def hf_model(family: Family) -> HFModel:
    row = HF_MODELS.get(family.name)
    if row is None:
        raise UnsupportedModelError(f"the transformers backend has no row for family {family.name!r}")
    return row


def family_for_model(model: Any) -> tuple[Family, HFModel]:
    """The family of a transformers model instance and its row; its class must be the family's own."""
    from hired.families import BY_MODEL_TYPE

    family = BY_MODEL_TYPE.get(getattr(getattr(model, "config", None), "model_type", None))
    row = HF_MODELS.get(family.name) if family is not None else None
    if row is None or not isinstance(model, row.transformers_class()):
        names = ", ".join(r.model_class for r in HF_MODELS.values())
        raise UnsupportedModelError(f"{type(model).__name__} is not supported; hired supports {names}")
    return family, row
