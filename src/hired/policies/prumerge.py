"""PruMerge and PruMerge+ (Shang et al., "LLaVA-PruMerge: Adaptive Token Reduction for Efficient
Large Multimodal Models", 2024), applied to each partition on its own.

Facts taken from the paper and its reference code (``token_prune_merge_advanced`` and
``..._plus`` in LLaVA-PruMerge's ``clip_encoder.py``):

- **Adaptive selection**: the CLS attention of the last ViT layer is scored with Tukey's fence;
  the tokens whose attention lies above ``Q3 + 1.5 * IQR`` are kept, so each image chooses its own
  count (about 32 of 576 tokens, 5.5%, on LLaVA-1.5 in the paper).
- **Scores**: the last ViT layer's q and k as one full-width head: ``softmax(q_cls K^T / sqrt(C))``
  (``C`` the hidden width), its CLS row.
- **Merging**: each kept token ``x_i`` becomes ``x_i + sum_j a_j x_j`` over its ``k`` most similar
  tokens by the cosine similarity of the last layer's keys (``k = 32`` for 576 tokens; scaled
  here with the tokens per partition), ``a_j`` their CLS attention, on the CLIP hidden states
  before the projector (the backend applies the weights there).
- **PruMerge+** adds spatially uniform samples: with ``step = int(1 / ratio)`` (``ratio`` = outlier
  share) the positions ``int(step / 6), int(step / 6) + int(step / 3), ...`` below ``N - 1`` that are
  not already kept, about three uniform tokens per outlier (about 144 of 576 tokens, 25%, in the
  paper).

Differences from the reference code, on purpose:

- the extra token the code appends (the attention-weighted sum of all dropped tokens) is left out,
  so that every kept token is a token of the grid and the newline layout is unchanged;
- each partition of a high-resolution image is handled on its own, and the statistics, spacing
  and neighbours use only valid (un-padded) tokens (positions count valid tokens); a partition
  with no outlier keeps its top token; a spacing of ``int(step / 3) = 0`` becomes 1 (the
  reference's ``arange`` would fail);
- the fixed-budget variants (below) are ours; where a partition keeps all its valid tokens they
  merge nothing there, so budget 1.0 is the unmodified model.

Registered names:

- ``prumerge``, ``prumerge+``: adaptive, as published (``view.budget`` is ignored; the report's
  partition budgets and kept counts show the chosen count).
- ``prumerge-fixed``: exactly ``view.budget`` tokens (split across partitions in proportion to
  valid tokens): the outliers by attention, cut to their top scores when there are more of them,
  filled with the next highest-attention tokens when there are fewer; merged as above.
- ``prumerge+-fixed``: exactly ``view.budget`` tokens: the outliers (cut by attention as above),
  then evenly spaced tokens (raster order) among the rest to fill the budget; merged as above.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hired.config import HiREDConfig
from hired.core.selection import topk_masks
from hired.core.view import ImageView, Selection
from hired.policies.common import (
    evenly_spaced,
    identity_weights,
    iqr_outliers,
    knn_merge_weights,
    proportional_budgets,
    ranked_fill,
    scale_k,
)
from hired.policies.registry import Scoring, register

NEIGHBOURS_AT_576 = 32  # k of the reference code for a 576-token CLIP-L/14-336 crop
SPATIAL_DENSITY = 3  # PruMerge+: uniform samples every int(step / 3) tokens, from int(step / 6)
SCORING = Scoring(layer="last", single_head=True)  # the reference: layer 23 of 24, one full-width head


def outliers(view: ImageView) -> Tensor:
    """[P, N] IQR outliers of the final-layer CLS attention; at least the top token of each
    partition that has valid tokens."""
    found = iqr_outliers(view.final_scores, view.valid)
    empty = found.sum(1) == 0
    if empty.any():
        top = topk_masks(view.final_scores, torch.ones(view.partitions, dtype=torch.long), view.valid)
        found |= top & empty[:, None]
    return found


def spatial_samples(valid: Tensor, chosen: Tensor) -> Tensor:
    """PruMerge+'s uniform supplement: [P, N] the valid tokens at positions
    ``arange(int(step / 6), n - 1, int(step / 3))`` among a partition's n valid tokens (raster
    order), ``step = int(n / outliers)``, minus the ones already chosen."""
    out = torch.zeros_like(valid)
    for p in range(valid.shape[0]):
        index = valid[p].nonzero().flatten()
        count = int(chosen[p].sum())
        if count == 0 or index.numel() == 0:
            continue
        step = int(index.numel() / count)
        positions = torch.arange(step // 6, index.numel() - 1, max(1, step // SPATIAL_DENSITY))
        out[p, index[positions]] = True
    return out & ~chosen


def merged(view: ImageView, keep: Tensor, budgets: Tensor) -> Selection:
    """The selection with PruMerge's merge weights; partitions that keep every valid token merge
    nothing (their rows are the identity)."""
    keep = keep & view.valid
    if view.keys is None:
        raise ValueError("PruMerge needs the last layer's keys; the backend passes them to NEEDS_KEYS policies")
    k = scale_k(NEIGHBOURS_AT_576, view.tokens)
    weights = knn_merge_weights(view.keys, keep, view.valid, view.final_scores, k)
    complete = (keep == view.valid).all(1).to(weights.device)
    weights[complete] = identity_weights(keep, weights.device)[complete]
    return Selection(keep, budgets.long(), weights)


@register("prumerge", merges=True, count_known=False, scoring=SCORING)
def prumerge_policy(view: ImageView, config: HiREDConfig) -> Selection:
    keep = outliers(view)
    return merged(view, keep, keep.sum(1))


@register("prumerge+", merges=True, count_known=False, scoring=SCORING)
def prumerge_plus_policy(view: ImageView, config: HiREDConfig) -> Selection:
    keep = outliers(view)
    keep = keep | spatial_samples(view.valid, keep)
    return merged(view, keep, keep.sum(1))


@register("prumerge-fixed", merges=True, scoring=SCORING)
def prumerge_fixed_policy(view: ImageView, config: HiREDConfig) -> Selection:
    budgets = proportional_budgets(view.valid, view.budget)
    keep = ranked_fill(outliers(view), view.final_scores, budgets, view.valid)
    return merged(view, keep, budgets)


@register("prumerge+-fixed", merges=True, scoring=SCORING)
def prumerge_plus_fixed_policy(view: ImageView, config: HiREDConfig) -> Selection:
    budgets = proportional_budgets(view.valid, view.budget)
    found = outliers(view)
    core = topk_masks(view.final_scores, torch.minimum(found.sum(1), budgets), found)
    keep = core.clone()
    for p in range(view.partitions):
        keep[p, evenly_spaced(view.valid[p] & ~core[p], int(budgets[p]) - int(core[p].sum()))] = True
    return merged(view, keep, budgets)
