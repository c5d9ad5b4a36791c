"""``hired``: the paper's method (Arif et al., AAAI 2025).

Phase 1 splits the budget between the full view (share ``alpha``) and the sub-images, in
proportion to the early-layer CLS attention of the full view that falls in each sub-image's
region; phase 2 keeps the tokens of each partition with the highest final-layer CLS attention.
``allocation="official"`` reproduces the published code's rounding and slot counting instead.

Views with no full view (``view.full_view`` False: Qwen's cells of one native-resolution
picture) share the budget among the regions by area (``alpha``) and early-layer score mass
(:func:`hired.core.allocation.region_budgets`); the published code has no such mode, so official
allocation reads them as exact mode does.
"""

from __future__ import annotations

import torch

from hired.config import HiREDConfig
from hired.core.allocation import region_budgets
from hired.core.selection import hired_selection, topk_masks
from hired.core.view import ImageView, Selection
from hired.policies.registry import register


def keeps_everything(view: ImageView, config: HiREDConfig) -> bool:
    """The published code skips selection when the budget is the whole image."""
    whole = view.budget >= view.total or (config.is_ratio and config.budget >= 1.0)
    return config.allocation == "official" and whole


def count_known(config: HiREDConfig) -> bool:
    """Exact mode keeps exactly the budget; official mode's floors depend on the scores, except
    at a 100% ratio, where the published code keeps everything."""
    return config.allocation == "exact" or (config.is_ratio and config.budget >= 1.0)


@register("hired", count_known=count_known)
def hired_policy(view: ImageView, config: HiREDConfig) -> Selection:
    """HiRED: budgets by early-layer content (phase 1), top-k by final-layer attention (phase 2)."""
    if keeps_everything(view, config):
        return Selection(torch.ones_like(view.valid), torch.full((view.partitions,), view.tokens))
    if not view.full_view:
        budgets = region_budgets(view.init_scores, view.valid, view.budget, config.alpha)
        return Selection(topk_masks(view.final_scores, budgets, view.valid), budgets)
    valid = view.valid if config.allocation == "exact" else None
    keep, budgets = hired_selection(
        view.final_scores, view.init_scores[0], view.grid, view.budget, config.alpha, config.allocation, valid
    )
    return Selection(keep, budgets)
