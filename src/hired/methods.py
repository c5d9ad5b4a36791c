"""Drop policies by name. Each takes one image's scores and returns a keep mask.

A policy is ``fn(view: ImageView, config: HiREDConfig) -> Selection``; register new ones with
``@register("name")``. ``hired`` is the paper's method; baselines live in ``hired.baselines``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hired.errors import ConfigError
from hired.selection import partition_budgets, topk_masks

if TYPE_CHECKING:
    from hired.config import HiREDConfig


@dataclass
class ImageView:
    """What a policy sees of one image (P partitions of N tokens, full view first)."""

    final_scores: Tensor  # [P, N] final-layer CLS attention, summed over heads
    init_scores: Tensor  # [P, N] early-layer CLS attention, summed over heads
    grid: tuple[int, int]  # (rows, cols) of sub-images; (1, 1) with P == 1 for LLaVA-1.5
    valid: Tensor  # [P, N] tokens that survive the model's unpadding
    budget: int  # tokens to keep for this image
    keys: Tensor | None = None  # [P, N, d] final-layer keys, for policies that merge

    @property
    def partitions(self) -> int:
        return self.final_scores.shape[0]


@dataclass
class Selection:
    """A policy's answer: keep mask [P, N] and the per-partition budgets it used."""

    keep: Tensor
    budgets: Tensor
    merge_weights: Tensor | None = None  # [P, N, N]: row i mixes tokens into kept token i


Policy = Callable[["ImageView", "HiREDConfig"], Selection]
POLICIES: dict[str, Policy] = {}
NEEDS_KEYS: set[str] = set()


def register(name: str, needs_keys: bool = False) -> Callable[[Policy], Policy]:
    def add(fn: Policy) -> Policy:
        POLICIES[name] = fn
        if needs_keys:
            NEEDS_KEYS.add(name)
        return fn

    return add


def check_method(name: str) -> None:
    if name not in POLICIES:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(POLICIES))}")


def get_policy(name: str) -> Policy:
    check_method(name)
    return POLICIES[name]


@register("hired")
def hired_policy(view: ImageView, config: HiREDConfig) -> Selection:
    """HiRED: budgets by early-layer content (phase 1), top-k by final-layer attention (phase 2)."""
    mode = config.allocation
    if mode == "official" and config.is_ratio and config.budget >= 1.0:
        # the published code skips selection at a 100% budget
        return Selection(torch.ones_like(view.valid), torch.full((view.partitions,), view.valid.shape[1]))
    valid = view.valid if mode == "exact" else None
    budgets = partition_budgets(
        view.init_scores[0], view.grid, view.budget, config.alpha, mode, valid, view.partitions, view.final_scores.shape[1]
    )
    return Selection(topk_masks(view.final_scores, budgets, valid), budgets)


def keep_all(view: ImageView) -> Selection:
    """Every valid token: what the unmodified model sees."""
    return Selection(view.valid.clone(), view.valid.sum(1))


def _load_baselines() -> None:
    try:
        import hired.baselines  # noqa: F401  (registers more policies)
    except ModuleNotFoundError as error:  # pragma: no cover - baselines are optional
        if error.name != "hired.baselines":
            raise


_load_baselines()
