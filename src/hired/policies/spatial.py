"""``spatial``: evenly spaced tokens, blind to content.

The budget is split across partitions in proportion to their valid tokens; within a partition the
kept tokens form a regular 2-D lattice over the valid (unpadded) region, thinned evenly to the
exact count (see :func:`hired.policies.common.lattice`)."""

from __future__ import annotations

from hired.config import HiREDConfig
from hired.core.view import ImageView, Selection
from hired.policies.common import lattice, mask_from_indices, proportional_budgets
from hired.policies.registry import register


@register("spatial")
def spatial_policy(view: ImageView, config: HiREDConfig) -> Selection:
    budgets = proportional_budgets(view.valid, view.budget)
    picks = [lattice(view.valid[p], int(budgets[p])) for p in range(view.partitions)]
    return Selection(mask_from_indices(picks, tuple(view.valid.shape)), budgets)
