"""Front end (vLLM's multimodal processor, in the API-server / LLM process): how many ``<image>``
placeholders each picture gets. With HiRED configured it is :func:`hired.planned_tokens`, the
function the transformers backend checks itself with, so the prompt holds exactly the tokens
the worker keeps; unconfigured it is vLLM's own count. Imports vLLM.
"""

from __future__ import annotations

from typing import Any

from vllm.model_executor.models.llava import LlavaProcessingInfo, _build_llava_or_pixtral_hf_info
from vllm.model_executor.models.llava_next import LlavaNextProcessingInfo

from hired.backends.vllm.settings import VLLMSettingError, read_config
from hired.recipe import Recipe


def image_tokens(hf_config: Any, height: int, width: int, full: int) -> int:
    """Placeholders for one image: ``full`` (vLLM's count) unless HiRED is configured."""
    config = read_config(hf_config)
    if config is None:
        return full
    recipe = Recipe.build(hf_config, config)
    layout = recipe.layout((height, width))
    if layout.length != full:  # hired's layout must be vLLM's packing, token for token
        raise VLLMSettingError(f"hired: vLLM packs a {height}x{width} image into {full} tokens but hired's "
                               f"{recipe.family.name} layout has {layout.length}; this model's geometry is not "
                               f"supported")
    planned = recipe.planned_tokens((height, width))
    if planned is None:  # read_config refuses such configs; kept as a guard
        raise VLLMSettingError(f"hired: the image-token count of {config.method} is not known from the size")
    return planned


class HiREDLlavaNextProcessingInfo(LlavaNextProcessingInfo):
    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        full = super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        return image_tokens(self.get_hf_config(), image_height, image_width, full)


class HiREDLlavaProcessingInfo(LlavaProcessingInfo):
    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        full = super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        return image_tokens(self.get_hf_config(), image_height, image_width, full)


def build_llava_info(ctx: Any):
    """vLLM's LLaVA info factory, with HiRED's count for CLIP-tower LLaVA (Pixtral-tower
    checkpoints keep vLLM's own info: HiRED does not apply to them)."""
    info = _build_llava_or_pixtral_hf_info(ctx)
    if type(info) is LlavaProcessingInfo:
        return HiREDLlavaProcessingInfo(ctx)
    return info
