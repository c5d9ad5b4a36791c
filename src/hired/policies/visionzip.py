"""VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language
Models", CVPR 2025), applied to each partition on its own: ``visionzip``.

Facts taken from the paper and its reference code (``clip_encoder.py`` of VisionZip):

- **Dominant tokens**: the tokens with the highest CLS attention (heads summed) of the feature
  layer are kept as they are.
- **Contextual tokens**: the remaining tokens are split into targets, picked evenly spaced among
  them (every ``max(1, remaining // contextual)``-th, raster order), and the others; each other
  token is assigned to its most similar target (dot product of L2-normalised keys) and every
  target becomes the plain average of itself and the tokens assigned to it.
- **Split of the budget**: the paper's settings are 54 dominant + 10 contextual of 64 tokens
  (108 + 20 of 128, 162 + 30 of 192), so the dominant share is 54/64 of the budget here.

Budget: exactly ``view.budget`` tokens (or all valid), split across partitions in proportion to
their valid tokens; per partition ``round(b * 54 / 64)`` dominant and the rest contextual. Kept
tokens = dominant tokens + contextual targets; the targets' features become the averages (merge
weights rows, convex). Differences from the reference code: the CLS token is not among the kept
tokens (LLaVA's default feature strategy drops it), the keys are the full multi-head keys rather
than their mean over heads, and only valid (un-padded) tokens take part.
"""

from __future__ import annotations

import torch

from hired.config import HiREDConfig
from hired.core.selection import topk_masks
from hired.core.view import ImageView, Selection
from hired.policies.common import cosine_similarity, identity_weights, proportional_budgets
from hired.policies.registry import register

DOMINANT_SHARE = 54 / 64  # the paper's 54 dominant + 10 contextual of 64 tokens


@register("visionzip", needs_keys=True)
def visionzip_policy(view: ImageView, config: HiREDConfig) -> Selection:
    if view.keys is None:
        raise ValueError("VisionZip needs the final layer's keys; the backend passes them to NEEDS_KEYS policies")
    budgets = proportional_budgets(view.valid, view.budget)
    dominant_counts = (budgets.double() * DOMINANT_SHARE).round().long()
    contextual_counts = budgets - dominant_counts
    dominant = topk_masks(view.final_scores, dominant_counts, view.valid)
    keep = dominant.clone()
    device = view.keys.device
    weights = identity_weights(dominant, device)
    similarity = cosine_similarity(view.keys)  # [P, N, N]
    for p in range(view.partitions):  # a handful of partitions
        contextual = int(contextual_counts[p])
        remaining = (view.valid[p] & ~dominant[p]).nonzero().flatten()
        if contextual <= 0 or remaining.numel() == 0:
            continue
        step = max(1, remaining.numel() // contextual)
        is_target = torch.zeros(remaining.numel(), dtype=torch.bool)
        is_target[torch.arange(0, remaining.numel(), step)[:contextual]] = True
        targets, others = remaining[is_target], remaining[~is_target]
        keep[p, targets] = True
        assign = torch.zeros(targets.numel(), remaining.numel(), device=device)  # [targets, remaining]
        assign[torch.arange(targets.numel()), is_target.nonzero().flatten()] = 1.0
        if others.numel():
            nearest = similarity[p][others.to(device)][:, targets.to(device)].argmax(-1)  # [others]
            others_pos = (~is_target).nonzero().flatten().to(device)
            assign[nearest, others_pos] = 1.0
        rows = torch.zeros(targets.numel(), view.valid.shape[1], device=device)
        rows[:, remaining.to(device)] = assign
        weights[p, targets.to(device)] = rows / rows.sum(-1, keepdim=True)
    return Selection(keep, budgets, weights)
