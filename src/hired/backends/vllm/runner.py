"""HiRED for one vLLM model instance (runs in each worker): scores from the vision tower's qkv
hooks, then the same per-image plan as the transformers backend
(:func:`hired.core.plan.keep_image_tokens`: policy, keep mask, newline layout, merge, and the
check against :func:`hired.planned_tokens`, which the front end used to size the prompt).

Imports vLLM only inside :meth:`HiREDRunner.build` (for the tensor-parallel collectives).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hired.backends.vllm.scoring import QKVScoreRecorder
from hired.backends.vllm.settings import VLLMSettingError, read_config
from hired.config import HiREDConfig
from hired.core.plan import keep_image_tokens
from hired.core.report import ImageReport
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
    """Config, policy, scoring hooks and the per-batch keep step of one model instance."""

    def __init__(self, hf_config: Any, config: HiREDConfig, family: Family, recorder: QKVScoreRecorder,
                 init_layer: int, final_layer: int):
        self.hf_config = hf_config
        self.config = config
        self.family = family
        self.policy = get_policy(config.method)
        self.count_known = is_count_known(config)
        self.recorder = recorder
        self.init_layer, self.final_layer = init_layer, final_layer
        self.reports: deque[ImageReport] = deque(maxlen=REPORTS_KEPT)

    @classmethod
    def build(cls, hf_config: Any, vision_tower: nn.Module) -> HiREDRunner | None:
        """``None`` when HiRED is not configured; else hooks on the two scoring layers."""
        config = read_config(hf_config)
        if config is None:
            return None
        family = family_for_config(hf_config)
        if hf_config.vision_feature_select_strategy != "default":
            raise VLLMSettingError(f"hired: vision_feature_select_strategy="
                                   f"{hf_config.vision_feature_select_strategy!r} is not supported; hired needs "
                                   f"'default' (CLS dropped)")
        layers = clip_layers(vision_tower)
        init, final = family.scoring_layers(hf_config, config)
        if max(init, final) >= len(layers):
            raise VLLMSettingError(f"hired: scoring layers ({init}, {final}) but vLLM builds only the first "
                                   f"{len(layers)} vision layers (up to the feature layer)")
        attn = layers[final].self_attn
        all_reduce = all_gather = None
        if getattr(attn, "tp_size", 1) > 1:  # heads sharded over the tensor-parallel group
            from vllm.distributed import tensor_model_parallel_all_gather, tensor_model_parallel_all_reduce

            all_reduce = tensor_model_parallel_all_reduce

            def all_gather(t: Tensor) -> Tensor:
                return tensor_model_parallel_all_gather(t, dim=-1)

        keep_keys = (final,) if config.method in NEEDS_KEYS else ()
        recorder = QKVScoreRecorder({i: layers[i].self_attn.qkv_proj for i in {init, final}},
                                    attn.num_heads_per_partition, all_reduce, all_gather, keep_keys)
        return cls(hf_config, config, family, recorder, init, final)

    def keep(self, packed: Sequence[Tensor], sizes: Sequence[tuple[int, int]], crops: Sequence[int]) -> list[Tensor]:
        """Each image's kept features, from its packed features ``[L_i, D]`` and the scores the
        recorder captured for the crops it ran (``crops[i]`` rows per image, in order; rows beyond
        the image's partitions are batch padding)."""
        scores = self.recorder.scores
        if self.final_layer not in scores or self.init_layer not in scores:
            raise VLLMSettingError("hired: the vision tower ran without the scoring hooks firing (is the ViT "
                                   "compiled? HiRED needs compile_mm_encoder off, vLLM's default)")
        final = scores[self.final_layer].float().cpu().split(list(crops))
        init = scores[self.init_layer].float().cpu().split(list(crops))
        keys = self.recorder.keys.get(self.final_layer)
        keys = keys.split(list(crops)) if keys is not None else [None] * len(crops)
        out = []
        for i, (features, size) in enumerate(zip(packed, sizes)):
            layout = self.family.layout(self.hf_config, size)
            p = layout.partitions
            key = keys[i][:p] if keys[i] is not None else None
            kept, report = keep_image_tokens(layout, features, final[i][:p], init[i][:p], self.policy, self.config,
                                             size, key, self.count_known)
            self.reports.append(report)
            out.append(kept)
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
