"""Pieces shared by the baseline policies (pure tensors in, tensors out).

Everything works per image on ``[P, N]`` masks and scores; the only loops are over the handful of
partitions, never over tokens, and nothing larger than ``[P, N, N]`` is built.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hired.core.allocation import apportion
from hired.core.selection import topk_masks


def proportional_budgets(valid: Tensor, budget: int) -> Tensor:
    """[P] budgets summing to ``min(budget, valid tokens)``, in proportion to each partition's
    valid tokens (largest remainder, each capped at its valid count)."""
    counts = valid.sum(1).long()
    return apportion(counts.double(), counts, int(budget))


def evenly_spaced(valid_row: Tensor, count: int) -> Tensor:
    """Indices of ``count`` tokens evenly spaced (in raster order) among a row's valid tokens."""
    index = valid_row.nonzero().flatten()
    count = min(int(count), index.numel())
    if count <= 0:
        return index[:0]
    positions = ((torch.arange(count, dtype=torch.float64) + 0.5) * index.numel() / count).floor().long()
    return index[positions]


def lattice(valid_row: Tensor, count: int) -> Tensor:
    """Indices of ``count`` valid tokens spread as a 2-D lattice over the valid region.

    The valid tokens of a square ``g x g`` grid are covered by an ``r x c`` lattice of cell
    centres (``r * c >= count``, aspect ratio of the valid bounding box), thinned evenly to
    ``count``; lattice points that fall on invalid tokens are replaced by evenly spaced valid
    tokens, so the result always has exactly ``min(count, valid)`` distinct valid tokens.
    """
    n = valid_row.numel()
    g = int(round(math.sqrt(n)))
    index = valid_row.nonzero().flatten()
    count = min(int(count), index.numel())
    if count <= 0:
        return index[:0]
    if g * g != n:
        return evenly_spaced(valid_row, count)
    ys, xs = index // g, index % g
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    h, w = y1 - y0, x1 - x0
    rows = min(h, max(1, round(math.sqrt(count * h / w))))
    cols = min(w, math.ceil(count / rows))
    rows = min(h, math.ceil(count / cols))
    cy = (y0 + (torch.arange(rows, dtype=torch.float64) + 0.5) * h / rows).floor().long()  # nearest token centre
    cx = (x0 + (torch.arange(cols, dtype=torch.float64) + 0.5) * w / cols).floor().long()
    points = (cy[:, None] * g + cx[None, :]).flatten()
    if points.numel() > count:  # thin the lattice evenly to the exact count
        keep = ((torch.arange(count, dtype=torch.float64) + 0.5) * points.numel() / count).floor().long()
        points = points[keep]
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[points] = True
    chosen &= valid_row
    missing = count - int(chosen.sum())
    if missing > 0:  # non-rectangular valid masks: fill evenly from the rest
        chosen[evenly_spaced(valid_row & ~chosen, missing)] = True
    return chosen.nonzero().flatten()


def mask_from_indices(indices: list[Tensor], shape: tuple[int, int]) -> Tensor:
    keep = torch.zeros(shape, dtype=torch.bool)
    for p, index in enumerate(indices):
        keep[p, index] = True
    return keep


def ranked_fill(first: Tensor, scores: Tensor, budgets: Tensor, valid: Tensor) -> Tensor:
    """[P, N] mask with ``budgets[p]`` valid tokens: the ``first`` tokens by score, then the rest
    by score (so a larger ``first`` set is cut to its top scores, a smaller one is filled)."""
    scores = scores.float()
    finite = scores[valid] if valid.any() else scores.new_zeros(1)
    offset = float(finite.max() - finite.min()) + 1.0
    priority = torch.where(first, scores + offset, scores)
    return topk_masks(priority, budgets, valid)


def iqr_outliers(scores: Tensor, valid: Tensor) -> Tensor:
    """[P, N] tokens whose score lies above ``Q3 + 1.5 * IQR`` of their partition's valid scores
    (Tukey's fence, as PruMerge's ``outlier_dectection``; quartiles with linear interpolation,
    like ``numpy.percentile``)."""
    out = torch.zeros_like(valid)
    for p in range(scores.shape[0]):
        row = scores[p, valid[p]].double()
        if row.numel() == 0:
            continue
        q1, q3 = torch.quantile(row, torch.tensor([0.25, 0.75], dtype=torch.float64))
        out[p] = valid[p] & (scores[p].double() > q3 + 1.5 * (q3 - q1))
    return out


def cosine_similarity(keys: Tensor) -> Tensor:
    """[P, N, N] cosine similarity of each partition's tokens by their keys [P, N, d]."""
    unit = torch.nn.functional.normalize(keys.float(), dim=-1)
    return unit @ unit.transpose(-1, -2)


def knn_merge_weights(keys: Tensor, keep: Tensor, valid: Tensor, scores: Tensor, k: int) -> Tensor:
    """[P, N, N] PruMerge's merge weights: each kept token i becomes
    ``x_i + sum_j a_j x_j`` over its ``k`` most key-similar valid tokens j (cosine similarity,
    itself excluded, kept or not), ``a_j`` their CLS attention, unnormalised, as the reference
    code adds them; rows of dropped tokens are zero.

    keys: [P, N, d]; keep, valid: [P, N] bool; scores: [P, N] CLS attention (non-negative).
    """
    P, N = keep.shape
    device = keys.device
    keep_d, valid_d = keep.to(device), valid.to(device)
    sim = cosine_similarity(keys)
    eye = torch.eye(N, dtype=torch.bool, device=device)
    sim = sim.masked_fill(~valid_d[:, None, :] | eye, float("-inf"))
    k = max(0, min(int(k), N - 1))
    attention = scores.to(device).float().clamp_min(0)
    weights = torch.zeros(P, N, N, device=device)
    if k:
        top = sim.topk(k, dim=-1)
        neighbor = torch.isfinite(top.values)  # fewer than k valid neighbours: skip the rest
        values = attention.gather(1, top.indices.flatten(1)).view(P, N, k) * neighbor
        weights.scatter_(-1, top.indices, values)
    weights[:, eye] += 1.0  # the token itself, weight 1
    return weights * keep_d[:, :, None].float()


def identity_weights(keep: Tensor, device: torch.device | None = None) -> Tensor:
    """[P, N, N] weights that leave each kept token as it is (rows of dropped tokens zero)."""
    P, N = keep.shape
    eye = torch.eye(N, device=device)
    return eye[None].repeat(P, 1, 1) * keep.to(device).float()[:, :, None]


def scale_k(k_at_576: int, tokens: int) -> int:
    """A neighbour count given for 576-token crops, scaled to ``tokens`` per partition."""
    return max(1, round(k_at_576 * tokens / 576))
