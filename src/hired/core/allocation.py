"""Phase 1: split a token budget among an image's partitions (pure tensors in, integers out)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def apportion(weights: Tensor, caps: Tensor, total: int) -> Tensor:
    """Integer shares of ``total`` proportional to ``weights``, each at most its cap.

    Water-filling: partitions whose proportional share exceeds their cap get the cap and the
    overflow is shared among the others; the rest is floored and the leftovers go out by
    largest remainder. The result sums to ``min(total, caps.sum())``. Partitions with zero
    weight only receive tokens when the weighted ones are full (then in proportion to caps).
    """
    weights = weights.double().clamp_min(0)
    caps = caps.long()
    total = min(int(total), int(caps.sum()))
    alloc = torch.zeros_like(caps)
    active = caps > 0
    remaining = total
    while remaining > 0 and active.any():
        w = torch.where(active, weights, torch.zeros_like(weights))
        if w.sum() <= 0:  # only zero-weight partitions left: fill them by capacity
            w = torch.where(active, caps.double(), torch.zeros_like(weights))
        quota = w / w.sum() * remaining
        over = active & (quota >= caps)
        if over.any():
            alloc[over] = caps[over]
            remaining -= int(caps[over].sum())
            active &= ~over
            continue
        base = quota.floor().long()
        alloc += base
        left = remaining - int(base.sum())
        if left > 0:
            remainder = torch.where(active, quota - base, torch.full_like(quota, -1.0))
            order = torch.argsort(remainder, descending=True, stable=True)
            alloc[order[:left]] += 1
        remaining = 0
    return alloc


def region_overlap_1d(cells: int, parts: int, start: float, stop: float, part_len: float) -> Tensor:
    """[cells, parts] share of each of ``cells`` equal cells spanning [start, stop) that
    falls in each of ``parts`` consecutive intervals of length ``part_len`` from 0."""
    edges = torch.linspace(start, stop, cells + 1, dtype=torch.float64)
    lo, hi = edges[:-1, None], edges[1:, None]
    part_lo = torch.arange(parts, dtype=torch.float64)[None] * part_len
    overlap = (torch.minimum(hi, part_lo + part_len) - torch.maximum(lo, part_lo)).clamp_min(0)
    return overlap / (hi - lo)


def picture_region(
    valid: Tensor | None, grid: tuple[int, int], m: int
) -> tuple[float, float, float, float] | None:
    """(y0, y1, x0, x1): the picture's region, in tokens, of the rows*m x cols*m canvas that the
    sub-images tile (the whole canvas when ``valid`` [rows*cols, m*m] is None); None when no
    sub-image token is valid."""
    rows, cols = grid
    if valid is None:
        return 0.0, float(rows * m), 0.0, float(cols * m)
    canvas = valid.reshape(rows, cols, m, m).permute(0, 2, 1, 3).reshape(rows * m, cols * m)
    ys = torch.nonzero(canvas.any(1)).flatten()
    xs = torch.nonzero(canvas.any(0)).flatten()
    if ys.numel() == 0:
        return None
    return float(ys[0]), float(ys[-1] + 1), float(xs[0]), float(xs[-1] + 1)


def subimage_content(init_scores: Tensor, grid: tuple[int, int], valid: Tensor | None = None) -> Tensor:
    """Visual content of each sub-image: the full view's early-layer CLS attention that falls
    inside each sub-image's region of the picture.

    init_scores: [N] attention of the full view's tokens (a square g x g grid, row-major).
    grid: (rows, cols) of sub-images. valid: [rows*cols, M] tokens of each sub-image that hold
    picture rather than padding (M = m x m); it locates the picture inside the padded canvas.
    Returns [rows*cols] content shares (row-major) that sum to the total attention.
    """
    rows, cols = grid
    n = init_scores.numel()
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"full-view tokens must form a square grid, got {n}")
    scores = init_scores.double().reshape(g, g)
    m = g if valid is None else int(round(valid.shape[-1] ** 0.5))
    region = picture_region(valid, grid, m)
    if region is None:  # unpadding leaves no sub-image token (an extreme aspect ratio): nothing to share
        return torch.zeros(rows * cols, dtype=torch.float64)
    y0, y1, x0, x1 = region
    over_y = region_overlap_1d(g, rows, y0, y1, m)  # [g, rows]
    over_x = region_overlap_1d(g, cols, x0, x1, m)  # [g, cols]
    return (over_y.T @ scores @ over_x).flatten()


def exact_budgets(
    budget: int,
    alpha: float,
    content: Tensor,
    capacity: Tensor,
) -> Tensor:
    """Per-partition budgets (full view first) that sum exactly to ``min(budget, capacity)``.

    The full view gets ``round(alpha * budget)`` tokens; the sub-images share the rest in
    proportion to ``content`` ([P-1]); ``capacity`` ([P]) caps each partition at its valid tokens.
    A sub-image's overflow goes to the other sub-images first (by content), and only what no
    sub-image can hold goes to the full view (and the full view's overflow to the sub-images), so
    ``alpha`` stays the full view's share whenever the partitions can hold it.
    """
    capacity = capacity.long()
    budget = min(int(budget), int(capacity.sum()))
    sub_capacity = int(capacity[1:].sum())
    full = min(max(math.floor(alpha * budget + 0.5), budget - sub_capacity), int(capacity[0]))
    content = content.double().clamp_min(0)
    if content.numel() and content.sum() <= 0:  # no signal: share by area
        content = capacity[1:].double()
    subs = apportion(content, capacity[1:], budget - full)
    return torch.cat([torch.tensor([full], dtype=torch.long), subs])


def region_budgets(init_scores: Tensor, valid: Tensor, budget: int, alpha: float) -> Tensor:
    """[P] budgets of P regions of one picture (no full view: Qwen's native-resolution cells),
    summing exactly to ``min(budget, valid tokens)``: a share ``alpha`` in proportion to each
    region's area (its valid tokens: the even coverage HiRED's full view gives), the rest in
    proportion to its early-layer score mass; each capped at its valid tokens.

    init_scores, valid: [P, N] early-layer scores and the tokens each region holds.
    """
    area = valid.sum(-1).double()
    content = (init_scores.double().clamp_min(0) * valid).sum(-1)
    if content.sum() <= 0:  # no signal: share by area
        content = area
    weights = alpha * area / area.sum().clamp_min(1) + (1 - alpha) * content / content.sum().clamp_min(1e-300)
    return apportion(weights, valid.sum(-1), budget)


def official_budgets(total: int, alpha: float, init_scores: Tensor, num_subimages: int, tokens: int) -> Tensor:
    """Per-partition budgets exactly as the published HiRED code computes them.

    full = min(int(total * alpha), N); sub = min(total - full, (P-1) * N); the full view's top
    int(N * (1 - alpha)) early-layer tokens are marked, the flat mark vector is cut into
    P-1 consecutive slots (equal when N divides, as for 576 tokens), and sub-image k gets
    min(int(count_k / sum * sub), N).
    """
    full = min(int(total * alpha), tokens)
    sub = min(total - full, num_subimages * tokens)
    budgets = torch.zeros(num_subimages + 1, dtype=torch.long)
    budgets[0] = full
    if sub <= 0 or num_subimages == 0:
        return budgets
    marked = int(tokens * (1 - alpha))
    marks = torch.zeros(tokens, dtype=torch.bool)
    marks[torch.topk(init_scores.float(), marked).indices] = True
    # The published code reshapes the N marks to P-1 equal slots (576 divides by every grid of
    # LLaVA-NeXT); where N does not divide, the slots are as equal as possible (first ones longer).
    counts = torch.stack([slot.sum() for slot in marks.tensor_split(num_subimages)])
    if counts.sum() > 0:  # the published code divides by zero here when alpha == 1
        share = counts.float() / counts.sum().float()  # float32, as published
        budgets[1:] = (share * sub).int().long().clamp(max=tokens)
    return budgets


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
