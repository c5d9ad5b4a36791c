"""HiRED for one vLLM model instance (runs in each worker): scores from the vision tower's qkv
hooks (:mod:`hired.backends.vllm.scoring`), then the per-batch step every backend runs
(:class:`hired.core.batch.BatchStep`): the policy's selection, merging policies' merge of the
vision features before the projector (through a hook on vLLM's projector), and each image's
packed features cut to the plan, checked against :func:`hired.planned_tokens` (which the front
end used to size the prompt).

Imports vLLM only inside :meth:`HiREDRunner.build` (for the tensor-parallel collectives).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hired.backends.vllm.scoring import QKVHooks, tensor_parallel
from hired.backends.vllm.settings import VLLMSettingError, check_layers, read_config
from hired.backends.vllm.table import VLLMRow
from hired.core.batch import BatchStep
from hired.core.recorder import ScoreRecorder
from hired.core.report import ImageReport
from hired.families import ImageInput
from hired.recipe import Recipe

REPORTS_KEPT = 256  # the last reports, for tests and debugging (LLM.apply_model can read them)


class HiREDRunner:
    """Recipe, scoring hooks, merge hook and the per-batch step of one model instance."""

    def __init__(self, recipe: Recipe, hooks: QKVHooks, projector: nn.Module):
        self.recipe = recipe
        self.config = recipe.config
        self.hooks = hooks
        self.reports: deque[ImageReport] = deque(maxlen=REPORTS_KEPT)
        self._step: BatchStep | None = None
        if recipe.merges:
            projector.register_forward_pre_hook(self._merge_before_projector)

    @classmethod
    def build(cls, hf_config: Any, model: nn.Module, row: VLLMRow) -> HiREDRunner | None:
        """``None`` when HiRED is not configured; else hooks on the scoring layers of ``model``
        (a vLLM model of the family of ``row``) and, for merging policies, on its projector's input."""
        config = read_config(hf_config)
        if config is None:
            return None
        layers = row.vision_layers(row.vision_tower(model))
        recipe = check_layers(hf_config, config, len(layers))
        attention = row.attention(layers[recipe.requests["final"].layer])
        recorder = ScoreRecorder(recipe.requests, recipe.has_cls, recipe.key_layers, **tensor_parallel(attention))
        hooks = QKVHooks({layer: row.attention(layers[layer]).qkv_proj for layer in recorder.layers}, recorder)
        return cls(recipe, hooks, row.projector(model))

    def select(self) -> None:
        recorder = self.hooks.recorder
        if "final" not in recorder.scores or "init" not in recorder.scores:
            raise VLLMSettingError("hired: the vision tower ran without the scoring hooks firing (is the ViT "
                                   "compiled? HiRED needs compile_mm_encoder off, vLLM's default)")
        keys = recorder.keys.get(self.recipe.requests["final"].layer) if self.recipe.merges else None
        self._step.select(recorder.scores["final"], recorder.scores["init"], keys)

    def _merge_before_projector(self, _module: nn.Module, args: tuple) -> tuple | None:
        if not self.hooks.active or self._step is None:
            return None
        self.select()
        return (torch.cat(self._step.merge(args[0])), *args[1:])

    def run(self, encode: Callable[[], Sequence[Tensor]], sizes: Sequence[tuple[int, int] | None],
            crops: Sequence[int]) -> list[Tensor]:
        """``encode()`` is vLLM's own image encoding (ViT + projector + packing) of a batch of
        images of ``sizes`` (the pictures' (height, width); ``None`` where vLLM does not pass it
        and the layout does not need it) with ``crops`` ViT rows each; returns each image's kept
        features."""
        layouts = [self.recipe.layout(ImageInput(size=size)) for size in sizes]
        self._step = self.recipe.batch(layouts, rows=list(crops), sizes=list(sizes))
        try:
            with self.hooks.recording():
                packed = encode()
            self.select()
            kept, reports = self._step.cut(list(packed))
        finally:
            self._step = None
        self.reports.extend(reports)
        return kept

    def recent_reports(self, clear: bool = False) -> list[dict[str, Any]]:
        """The last images' reports as plain data (picklable for ``LLM.apply_model``)."""
        out = [{"image_size": r.image_size, "llm_tokens": r.llm_tokens, "keep_mask": (r.keep_mask & r.valid).tolist(),
                 "partition_budgets": r.partition_budgets} for r in self.reports]
        if clear:
            self.reports.clear()
        return out


def image_sizes_of(image_sizes: Tensor | None, count: int, default: int) -> list[tuple[int, int]]:
    if image_sizes is None:
        return [(default, default)] * count
    return [(int(h), int(w)) for h, w in torch.as_tensor(image_sizes).tolist()]
