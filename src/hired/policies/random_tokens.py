"""``random``: a seeded uniform sample of valid tokens.

The budget is split across partitions in proportion to their valid tokens; within a partition
the kept tokens are drawn uniformly without replacement from a generator seeded with
``config.seed`` (the same seed and image geometry give the same tokens)."""

from __future__ import annotations

import torch

from hired.config import HiREDConfig
from hired.core.selection import topk_masks
from hired.core.view import ImageView, Selection
from hired.policies.common import proportional_budgets
from hired.policies.registry import register


@register("random")
def random_policy(view: ImageView, config: HiREDConfig) -> Selection:
    budgets = proportional_budgets(view.valid, view.budget)
    generator = torch.Generator().manual_seed(int(config.seed))
    draw = torch.rand(view.valid.shape, generator=generator)
    return Selection(topk_masks(draw, budgets, view.valid), budgets)
