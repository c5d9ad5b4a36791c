"""Merging dropped tokens into kept ones (pure tensors). Policies that merge (PruMerge,
VisionZip) return weights; the adapters apply them with :func:`apply_merge_weights`."""

from __future__ import annotations

from torch import Tensor


def apply_merge_weights(features: Tensor, keep: Tensor, weights: Tensor) -> Tensor:
    """Replace each kept token's feature by its weighted mix of its partition's tokens.

    features: [P, N, D]; keep: [P, N] bool; weights: [P, N, N], row i used only where keep[:, i]
    (row i of partition p mixes the tokens of partition p). Returns [P, N, D]; rows of dropped
    tokens are returned unchanged. Only kept rows are multiplied (K x N x D work, not N x N x D).
    """
    out = features.clone()
    for p in range(features.shape[0]):  # a handful of partitions, not tokens
        rows = keep[p].nonzero().flatten()
        if rows.numel():
            out[p, rows] = weights[p, rows].to(features.dtype) @ features[p]
    return out
