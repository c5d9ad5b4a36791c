"""The model classes :func:`hired.backends.vllm.register` puts in place of vLLM's LLaVA-NeXT and
LLaVA-1.5 (worker side). Imports vLLM.

Each subclass (1) loads checkpoints as transformers 5 saves them (vision-tower names mapped,
:mod:`hired.backends.vllm.weights`), (2) binds vLLM's own multimodal processor to HiRED's
processing info (the placeholder count, :mod:`hired.backends.vllm.processing`), and (3) when
HiRED is configured, cuts each image's embeddings to the plan in ``_process_image_input``; the
vision tower, projector, packing and language model are vLLM's, untouched. Unconfigured, (3)
calls vLLM's method and nothing else: same code path, same outputs. Precomputed
``image_embeds`` inputs are left alone (vLLM counts them from their shape).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from vllm.logger import init_logger
from vllm.model_executor.models.llava import (
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaImageEmbeddingInputs,
    _build_llava_or_pixtral_hf_processor,
)
from vllm.model_executor.models.llava_next import (
    LlavaNextForConditionalGeneration,
    LlavaNextImageEmbeddingInputs,
    LlavaNextMultiModalProcessor,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from hired.backends.vllm.processing import HiREDLlavaNextProcessingInfo, build_llava_info
from hired.backends.vllm.runner import HiREDRunner, image_sizes_of
from hired.backends.vllm.settings import describe
from hired.backends.vllm.table import VLLM_MODELS
from hired.backends.vllm.weights import rename_vision_tower

logger = init_logger("vllm.hired")  # under "vllm." so vLLM's log settings apply


def _crops(pixel_values) -> list[int]:
    """ViT crops per image as vLLM stacked them (a padded [B, P, ...] tensor or a list)."""
    if isinstance(pixel_values, torch.Tensor):
        return [pixel_values.shape[1]] * pixel_values.shape[0]
    return [v.shape[0] for v in pixel_values]


class HiREDMixin:
    """What both HiRED classes add to vLLM's: the runner (``None`` unconfigured), the weight-name
    mapping and the reports."""

    family_label = ""
    family = ""  # the row of hired.backends.vllm.table

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.hired = HiREDRunner.build(self.config, self, VLLM_MODELS[self.family])
        logger.info("%s (%s)", describe(self.hired.config if self.hired else None), self.family_label)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return super().load_weights(rename_vision_tower(weights))

    def hired_reports(self, clear: bool = False) -> list[dict]:
        """The last images' reports (``LLM.apply_model(operator.methodcaller("hired_reports"))``)."""
        return self.hired.recent_reports(clear) if self.hired is not None else []


@MULTIMODAL_REGISTRY.register_processor(
    LlavaNextMultiModalProcessor,
    info=HiREDLlavaNextProcessingInfo,
    dummy_inputs=LlavaDummyInputsBuilder,
)
class HiREDLlavaNextForConditionalGeneration(HiREDMixin, LlavaNextForConditionalGeneration):
    family_label = "LLaVA-NeXT"
    family = "llava_next"

    def _process_image_input(self, image_input):
        if self.hired is None or isinstance(image_input, LlavaNextImageEmbeddingInputs):
            return super()._process_image_input(image_input)
        crops = _crops(image_input["pixel_values"])
        sizes = image_sizes_of(image_input.get("image_sizes"), len(crops), self.config.vision_config.image_size)
        encode = super()._process_image_input
        return self.hired.run(lambda: encode(image_input), sizes, crops)


@MULTIMODAL_REGISTRY.register_processor(
    _build_llava_or_pixtral_hf_processor,
    info=build_llava_info,
    dummy_inputs=LlavaDummyInputsBuilder,
)
class HiREDLlavaForConditionalGeneration(HiREDMixin, LlavaForConditionalGeneration):
    family_label = "LLaVA-1.5"
    family = "llava"

    def _process_image_input(self, image_input):
        if self.hired is None or isinstance(image_input, LlavaImageEmbeddingInputs):
            return super()._process_image_input(image_input)
        count = len(image_input["pixel_values"])
        # one crop whatever the picture; vLLM does not pass the picture's size (reports say None)
        encode = super()._process_image_input
        return self.hired.run(lambda: list(encode(image_input)), [None] * count, [1] * count)
