"""Phase 2: keep masks from scores and per-partition budgets (pure tensors in, bool masks out)."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from hired.config import HiREDConfig
from hired.core.allocation import partition_budgets
from hired.errors import ConfigError, InputError


def check_scores(final_scores: Tensor, init_scores: Tensor, valid: Tensor | None = None) -> None:
    """InputError where a score of a token that can be kept is NaN or infinite: ranked, NaN went
    first and phase 1 gave the sub-images nothing (half the budget kept, silently). Attention
    scores are finite; non-finite ones come from a numerically broken forward (fp16 overflow)."""
    final = final_scores if valid is None else final_scores[valid.to(final_scores.device)]
    if not (bool(torch.isfinite(final).all()) and bool(torch.isfinite(init_scores).all())):
        raise InputError("token scores hold NaN or infinite values (a numerically broken vision forward, e.g. "
                         "float16 overflow); no token can be ranked by them: try float32 or bfloat16")


def topk_masks(scores: Tensor, budgets: Tensor, valid: Tensor | None = None) -> Tensor:
    """[P, N] mask keeping the ``budgets[p]`` highest-scoring valid tokens of each row.

    Ties go to the earlier token. Invalid tokens are never kept, so a budget larger than a
    row's valid count keeps just its valid tokens.
    """
    scores = scores.float()
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    keep = ranks < budgets.to(scores.device)[:, None]
    return keep if valid is None else keep & valid


def select_tokens(
    final_scores: Tensor,
    init_scores: Tensor,
    grid: tuple[int, int],
    budget: int | float,
    alpha: float,
    mode: str = "exact",
    valid: Tensor | None = None,
) -> Tensor:
    """HiRED's two phases for one image: bool keep mask [P, N].

    final_scores: [P, N] final-layer CLS attention (summed over heads) of every partition,
        full view first, sub-images row-major. init_scores: [N] early-layer CLS attention of
        the full view. grid: (rows, cols) of sub-images (P = rows * cols + 1, or P = 1 for a
        single-partition model). budget: as in HiREDConfig, an int is the count of tokens to
        keep, a float in (0, 1] a share of all P x N tokens (rounded in exact mode, floored in
        official mode); anything else raises ConfigError. alpha: full view's share.
    mode "exact" keeps exactly ``min(budget, valid tokens)`` tokens and never a token outside
    ``valid`` (tokens that unpadding removes). Scores that are NaN or infinite (where they could
    be kept) raise InputError. mode "official" reproduces the published code:
    it selects on the padded grid and ignores ``valid``; the caller unpads afterwards.
    """
    if final_scores.dim() != 2:
        raise ConfigError(f"final_scores must be [P, N], got shape {tuple(final_scores.shape)}")
    P, N = final_scores.shape
    if init_scores.numel() != N:
        raise ConfigError(f"init_scores has {init_scores.numel()} tokens, final_scores rows have {N}")
    if valid is not None and valid.shape != final_scores.shape:
        raise ConfigError(f"valid has shape {tuple(valid.shape)}, expected {(P, N)}")
    check_scores(final_scores, init_scores, valid)
    if isinstance(budget, Tensor) and budget.numel() == 1:
        budget = budget.item()
    if isinstance(budget, numbers.Integral) and not isinstance(budget, bool):
        budget = int(budget)
    elif isinstance(budget, numbers.Real) and not isinstance(budget, bool):
        budget = float(budget)
    count = HiREDConfig(budget=budget, alpha=alpha, allocation=mode).budget_tokens(P * N)  # validates all three
    return hired_selection(final_scores, init_scores.flatten(), grid, count, alpha, mode, valid)[0]


def hired_selection(
    final_scores: Tensor,
    init_scores: Tensor,
    grid: tuple[int, int],
    budget: int,
    alpha: float,
    mode: str = "exact",
    valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(keep mask [P, N], budgets [P]): phase 1 then phase 2, as :func:`select_tokens` describes;
    the ``hired`` policy and :func:`select_tokens` both run this."""
    P, N = final_scores.shape
    budgets = partition_budgets(init_scores, grid, budget, alpha, mode, valid, P, N)
    return topk_masks(final_scores, budgets, valid if mode == "exact" else None), budgets
