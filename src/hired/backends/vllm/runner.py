"""HiRED for one vLLM model instance (runs in each worker): scores from the vision tower's qkv
hooks, then the same steps as the transformers backend: the policy's selection
(:func:`hired.core.plan.select`), merging policies' merge of the vision features before the
projector (:func:`hired.core.plan.merge_partitions`, through a hook on vLLM's projector), and
the plan, checked against :func:`hired.planned_tokens` (which the front end used to size the
prompt), cutting each image's packed features (:func:`hired.core.plan.keep_image_tokens`).

Imports vLLM only inside :meth:`HiREDRunner.build` (for the tensor-parallel collectives).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hired.backends.vllm.scoring import QKVScoreRecorder
from hired.backends.vllm.settings import VLLMSettingError, check_layers, read_config
from hired.config import HiREDConfig
from hired.core.layout import ImageLayout
from hired.core.plan import keep_image_tokens, merge_partitions, select
from hired.core.report import ImageReport
from hired.core.view import Selection
from hired.families import Family, family_for_config
from hired.policies import NEEDS_KEYS, get_policy, is_count_known

REPORTS_KEPT = 256  # the last reports, for tests and debugging (LLM.apply_model can read them)


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


class HiREDRunner:
    """Config, policy, scoring hooks, merge hook and the per-batch steps of one model instance."""

    def __init__(self, hf_config: Any, config: HiREDConfig, family: Family, recorder: QKVScoreRecorder,
                 projector: nn.Module):
        self.hf_config = hf_config
        self.config = config
        self.family = family
        self.policy = get_policy(config.method)
        self.count_known = is_count_known(config)
        self.recorder = recorder
        self.requests = recorder.requests
        self.merges = config.method in NEEDS_KEYS
        self.key_heads = 1 if self.requests["final"].heads == 1 else family.num_heads(hf_config)
        self.reports: deque[ImageReport] = deque(maxlen=REPORTS_KEPT)
        self._batch: tuple[list[ImageLayout], list[int]] | None = None
        self._selections: list[Selection] | None = None
        if self.merges:
            projector.register_forward_pre_hook(self._merge_before_projector)

    @classmethod
    def build(cls, hf_config: Any, vision_tower: nn.Module, projector: nn.Module) -> HiREDRunner | None:
        """``None`` when HiRED is not configured; else hooks on the scoring layers (and, for
        merging policies, on the projector's input)."""
        config = read_config(hf_config)
        if config is None:
            return None
        family = family_for_config(hf_config)
        layers = clip_layers(vision_tower)
        requests = family.score_requests(hf_config, config)
        check_layers(hf_config, config, len(layers))
        attn = layers[requests["final"].layer].self_attn
        tp_size = getattr(attn, "tp_size", 1)
        all_reduce = all_gather = None
        if tp_size > 1:  # heads sharded over the tensor-parallel group
            from vllm.distributed import tensor_model_parallel_all_gather, tensor_model_parallel_all_reduce

            all_reduce = tensor_model_parallel_all_reduce

            def all_gather(t: Tensor) -> Tensor:
                return tensor_model_parallel_all_gather(t, dim=-1)

        final = requests["final"].layer
        keep_keys = (final,) if config.method in NEEDS_KEYS else ()
        recorder = QKVScoreRecorder({r.layer: layers[r.layer].self_attn.qkv_proj for r in requests.values()},
                                    requests, attn.num_heads_per_partition, tp_size, all_reduce, all_gather,
                                    keep_keys)
        return cls(hf_config, config, family, recorder, projector)

    def select_all(self) -> list[Selection]:
        """Each image's selection from the recorded scores (``crops`` rows per image; rows beyond
        its partitions are batch padding)."""
        if self._selections is not None:
            return self._selections
        scores = self.recorder.scores
        if "final" not in scores or "init" not in scores:
            raise VLLMSettingError("hired: the vision tower ran without the scoring hooks firing (is the ViT "
                                   "compiled? HiRED needs compile_mm_encoder off, vLLM's default)")
        layouts, crops = self._batch
        final = scores["final"].cpu().split(crops)
        init = scores["init"].cpu().split(crops)
        keys = self.recorder.keys.get(self.requests["final"].layer)
        keys = keys.split(crops) if keys is not None else [None] * len(crops)
        self._selections = [
            select(layout, final[i][:layout.partitions], init[i][:layout.partitions], self.policy, self.config,
                   keys[i][:layout.partitions] if keys[i] is not None else None, self.key_heads)
            for i, layout in enumerate(layouts)
        ]
        return self._selections

    def _merge_before_projector(self, _module: nn.Module, args: tuple) -> tuple | None:
        if not self.recorder.active:
            return None
        layouts, crops = self._batch
        rows = list(args[0].split(crops))  # [crops_i, N, D_vision] per image
        merged = [torch.cat([merge_partitions(r[:lay.partitions], sel, lay), r[lay.partitions:]])
                  for r, sel, lay in zip(rows, self.select_all(), layouts)]
        return (torch.cat(merged), *args[1:])

    def run(self, encode: Callable[[], Sequence[Tensor]], sizes: Sequence[tuple[int, int]],
            crops: Sequence[int]) -> list[Tensor]:
        """``encode()`` is vLLM's own image encoding (ViT + projector + packing) of a batch of
        images of ``sizes`` with ``crops`` ViT rows each; returns each image's kept features."""
        layouts = [self.family.layout(self.hf_config, size) for size in sizes]
        self._batch, self._selections = (layouts, list(crops)), None
        try:
            with self.recorder.recording():
                packed = encode()
            selections = self.select_all()
        finally:
            self._batch = None
        out = []
        for layout, features, selection, size in zip(layouts, packed, selections, sizes):
            kept, report = keep_image_tokens(layout, features, selection, self.config, size, self.count_known)
            self.reports.append(report)
            out.append(kept)
        self._selections = None
        return out

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
