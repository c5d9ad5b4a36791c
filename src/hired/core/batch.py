"""One batch of images, as every backend runs it (pure tensors): the per-batch step.

A backend encodes a batch with the model's own code while a
:class:`~hired.core.recorder.ScoreRecorder` records scores, then calls, in order:

1. :meth:`BatchStep.select`: each image's recorded per-crop scores (and keys) mapped to HiRED's
   partitions by its layout (crop order, pooling such as a pixel shuffle or a 2 x 2 merge), then
   the policy's selection;
2. :meth:`BatchStep.merge` (merging policies only, on the projector's input): each kept token
   replaced by its merge;
3. :meth:`BatchStep.cut`: each image's packed features (the model's own packing, newlines
   included; or a tuple of streams sharing its token axis, such as Qwen3-VL's deepstack
   features) cut to the plan, checked against :func:`~hired.core.plan.planned_tokens`, with the
   image's report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hired.config import HiREDConfig
from hired.core.layout import ImageLayout
from hired.core.plan import Policy, keep_image_tokens, merge_partitions, plan_image, select
from hired.core.report import ImageReport
from hired.core.view import Selection
from hired.errors import HiREDError

PerImage = Tensor | Sequence[Tensor]  # stacked crop rows (split by ``rows``) or one tensor per image
Packed = Tensor | tuple[Tensor, ...]


@dataclass
class BatchStep:
    """The per-batch step of one batch.

    layouts: each image's layout. policy, config, key_heads, count_known: as the backend's
    :class:`~hired.recipe.Recipe` resolved them. rows: each image's rows in stacked per-crop
    tensors (default: its layout's crops; more where a backend pads a batch, the extra rows
    passed through). sizes: each picture's (height, width) for its report (``None`` if unknown).
    """

    layouts: list[ImageLayout]
    policy: Policy
    config: HiREDConfig
    key_heads: int = 1
    count_known: bool = True
    rows: list[int] | None = None
    sizes: list[tuple[int, int] | None] | None = None
    selections: list[Selection] | None = field(default=None, init=False)

    def split(self, values: PerImage) -> list[Tensor]:
        """Each image's rows of a stacked tensor (or a per-image list, passed through)."""
        if not isinstance(values, Tensor):
            values = list(values)
        else:
            rows = self.rows or [layout.encoder_crops for layout in self.layouts]
            if sum(rows) != values.shape[0]:
                raise HiREDError(f"internal error: {values.shape[0]} encoder rows for images of {rows} rows")
            values = list(values.split(rows))
        if len(values) != len(self.layouts):
            raise HiREDError(f"internal error: {len(values)} images' encoder rows for {len(self.layouts)} layouts")
        return values

    def select(self, final: PerImage, init: PerImage, keys: PerImage | None = None) -> list[Selection]:
        """Each image's selection from its per-crop scores ``[C, T]`` (and keys ``[C, T, d]``
        for merging policies) in the model's crop and token order. Idempotent per batch."""
        if self.selections is not None:
            return self.selections
        crops = [layout.encoder_crops for layout in self.layouts]
        final = [f[:c].cpu() for f, c in zip(self.split(final), crops)]
        init = [i[:c].cpu() for i, c in zip(self.split(init), crops)]
        key_rows = [k[:c] for k, c in zip(self.split(keys), crops)] if keys is not None else [None] * len(crops)
        self.selections = [
            select(layout, layout.partition_scores(f), layout.partition_scores(i), self.policy, self.config,
                   layout.partition_keys(k) if k is not None else None, self.key_heads)
            for layout, f, i, k in zip(self.layouts, final, init, key_rows)
        ]
        return self.selections

    def merge(self, features: PerImage) -> list[Tensor]:
        """Each image's projector inputs ``[C, N', D]`` with its kept tokens merged (after
        :meth:`select`); rows beyond an image's crops (batch padding) pass unchanged."""
        if self.selections is None:
            raise HiREDError("internal error: merge before select")
        out = []
        for rows, selection, layout in zip(self.split(features), self.selections, self.layouts):
            crops = layout.encoder_crops
            merged = merge_partitions(rows[:crops], selection, layout)
            out.append(merged if rows.shape[0] == crops else torch.cat([merged, rows[crops:]]))
        return out

    def reports(self) -> list[ImageReport]:
        """Each image's report alone, with no features to cut (after :meth:`select`)."""
        if self.selections is None:
            raise HiREDError("internal error: reports before select")
        sizes = self.sizes or [None] * len(self.layouts)
        return [plan_image(layout, selection, self.config, size).report
                for layout, selection, size in zip(self.layouts, self.selections, sizes)]

    def cut(self, packed: Sequence[Packed]) -> tuple[list[Packed], list[ImageReport]]:
        """Each image's packed features ``[L, D]`` (or a tuple of streams sharing the token axis)
        cut to its plan, in the same structure, and one report per image (after :meth:`select`)."""
        if self.selections is None:
            raise HiREDError("internal error: cut before select")
        sizes = self.sizes or [None] * len(self.layouts)
        kept, reports = [], []
        for layout, features, selection, size in zip(self.layouts, packed, self.selections, sizes):
            cut, report = keep_image_tokens(layout, features, selection, self.config, size, self.count_known)
            kept.append(cut)
            reports.append(report)
        return kept, reports
