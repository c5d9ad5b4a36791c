"""Front end (vLLM's multimodal processor, in the API-server / LLM process): how many ``<image>``
placeholders each picture gets. With HiRED configured it is :func:`hired.planned_tokens`, the
function the transformers backend checks itself with, so the prompt holds exactly the tokens
the worker keeps (cached per picture size, :mod:`hired.backends.vllm.counts`); unconfigured it
is vLLM's own count. Imports vLLM.
"""

from __future__ import annotations

from typing import Any

from vllm.model_executor.models.llava import LlavaProcessingInfo, _build_llava_or_pixtral_hf_info
from vllm.model_executor.models.llava_next import LlavaNextProcessingInfo

from hired.backends.vllm.counts import image_tokens


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
