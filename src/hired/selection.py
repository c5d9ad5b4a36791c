"""Phase 2: keep masks from scores and per-partition budgets (pure tensors in, bool masks out)."""

from __future__ import annotations

import torch
from torch import Tensor

from hired.allocation import exact_budgets, official_budgets, subimage_content


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


def partition_budgets(
    init_scores: Tensor,
    grid: tuple[int, int],
    budget: int,
    alpha: float,
    mode: str = "exact",
    valid: Tensor | None = None,
    num_partitions: int | None = None,
    tokens: int | None = None,
) -> Tensor:
    """Phase 1 alone: [P] budgets, full view first, sub-images row-major."""
    rows, cols = grid
    num_sub = rows * cols
    P = num_partitions if num_partitions is not None else num_sub + 1
    N = tokens if tokens is not None else init_scores.numel()
    if P == 1:  # single-partition models (LLaVA-1.5): phase 2 only
        cap = int(valid.sum()) if (valid is not None and mode == "exact") else N
        return torch.tensor([min(budget, cap)], dtype=torch.long)
    if P != num_sub + 1:
        raise ValueError(f"{P} partitions do not match a {rows}x{cols} sub-image grid plus the full view")
    if mode == "official":
        return official_budgets(budget, alpha, init_scores, num_sub, N)
    if mode != "exact":
        raise ValueError(f"mode must be 'exact' or 'official', got {mode!r}")
    capacity = valid.sum(-1) if valid is not None else torch.full((P,), N, dtype=torch.long)
    content = subimage_content(init_scores, grid, None if valid is None else valid[1:])
    return exact_budgets(budget, alpha, content, capacity)


def select_tokens(
    final_scores: Tensor,
    init_scores: Tensor,
    grid: tuple[int, int],
    budget: int,
    alpha: float,
    mode: str = "exact",
    valid: Tensor | None = None,
) -> Tensor:
    """HiRED's two phases for one image: bool keep mask [P, N].

    final_scores: [P, N] final-layer CLS attention (summed over heads) of every partition,
        full view first, sub-images row-major. init_scores: [N] early-layer CLS attention of
        the full view. grid: (rows, cols) of sub-images (P = rows * cols + 1, or P = 1 for a
        single-partition model). budget: total tokens to keep. alpha: full view's share.
    mode "exact" keeps exactly ``min(budget, valid tokens)`` tokens and never a token outside
    ``valid`` (tokens that unpadding removes). mode "official" reproduces the published code:
    it selects on the padded grid and ignores ``valid``; the caller unpads afterwards.
    """
    P, N = final_scores.shape
    if init_scores.numel() != N:
        raise ValueError(f"init_scores has {init_scores.numel()} tokens, final_scores rows have {N}")
    if valid is not None and valid.shape != final_scores.shape:
        raise ValueError(f"valid has shape {tuple(valid.shape)}, expected {(P, N)}")
    budgets = partition_budgets(init_scores.flatten(), grid, int(budget), alpha, mode, valid, P, N)
    return topk_masks(final_scores, budgets, valid if mode == "exact" else None)
