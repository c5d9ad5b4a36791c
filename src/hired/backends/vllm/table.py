"""Where things live in vLLM's models, one row per family (the vLLM twin of
:mod:`hired.backends.hf.table`): the architecture vLLM registers, hired's class for it, and how
to reach the encoder's layers, each layer's fused qkv projection and the projector.

Adding a family to the vLLM backend is one row here plus its class in
:mod:`hired.backends.vllm.models` (binding vLLM's processor to :func:`hired.planned_tokens` and
cutting the embeddings in the model's image-encoding method). Imports nothing of vLLM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from hired.backends.vllm.settings import VLLMSettingError


def clip_layers(vision_tower: nn.Module) -> nn.ModuleList:
    """The encoder layers of vLLM's CLIPVisionModel, or an error naming what is missing."""
    model = getattr(vision_tower, "vision_model", None)
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    embeddings = getattr(model, "embeddings", None)
    if layers is None or not hasattr(embeddings, "class_embedding") or not hasattr(layers[0].self_attn, "qkv_proj"):
        raise VLLMSettingError(
            f"hired: the vision tower {type(vision_tower).__name__} is not a CLIP ViT with a CLS token and a fused "
            f"qkv projection; HiRED under vLLM supports CLIP towers only"
        )
    return layers


@dataclass(frozen=True)
class VLLMRow:
    """One family under vLLM: ``arch`` (the architecture name vLLM registers), ``target``
    (hired's class, "module:Class", imported lazily by vLLM), the encoder layers of the model's
    vision tower, a layer's attention module (its ``qkv_proj`` is hooked; its head counts give
    the tensor-parallel split) and the model's projector."""

    family: str
    arch: str
    target: str
    vision_layers: Callable[[nn.Module], nn.ModuleList] = clip_layers
    attention: Callable[[nn.Module], nn.Module] = lambda layer: layer.self_attn
    projector: Callable[[nn.Module], nn.Module] = lambda model: model.multi_modal_projector

    def vision_tower(self, model: nn.Module) -> nn.Module:
        return model.vision_tower


_MODELS = "hired.backends.vllm.models"
VLLM_MODELS: dict[str, VLLMRow] = {
    row.family: row for row in (
        VLLMRow("llava_next", "LlavaNextForConditionalGeneration", f"{_MODELS}:HiREDLlavaNextForConditionalGeneration"),
        VLLMRow("llava", "LlavaForConditionalGeneration", f"{_MODELS}:HiREDLlavaForConditionalGeneration"),
    )
}
