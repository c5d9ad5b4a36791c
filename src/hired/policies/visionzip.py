"""VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language
Models", CVPR 2025), applied to each partition on its own: ``visionzip``.

As the reference code (``visionzip/clip_encoder.py``) does:

- **Dominant tokens**: the tokens with the highest CLS attention (heads summed) of the feature
  layer are kept as they are.
- **Contextual tokens**: the remaining tokens are split into targets, picked evenly spaced among
  them (every ``max(1, remaining // contextual)``-th, raster order), and the others; each other
  token goes to its most similar target by the cosine similarity of the feature layer's keys
  averaged over heads (the reference's ``metric``), and every target becomes
  ``target + mean(tokens assigned to it)`` (weights summing to 2; a target with none is kept as is).
- Merging acts on the vision features before the projector (CLIP hidden states), where the
  reference merges; the backend applies the weights there.
- **Split of the budget**: the paper's settings are 54 dominant + 10 contextual of 64 tokens
  (108 + 20 of 128, 162 + 30 of 192), so the dominant share is 54/64 of the budget here.

Budget: exactly ``view.budget`` tokens (or all valid), split across partitions in proportion to
their valid tokens; per partition ``round(b * 54 / 64)`` dominant and the rest contextual.
Differences from the reference, on purpose: the CLS token is not among the kept tokens (LLaVA's
default feature strategy drops it; the reference keeps it as a dominant token), the budget is
split over the partitions of a high-resolution image, and only valid (un-padded) tokens take part.
"""

from __future__ import annotations

import torch

from hired.config import HiREDConfig
from hired.core.selection import topk_masks
from hired.core.view import ImageView, Selection
from hired.policies.common import identity_weights, proportional_budgets
from hired.policies.registry import register

DOMINANT_SHARE = 54 / 64  # the paper's 54 dominant + 10 contextual of 64 tokens


def head_mean_keys(view: ImageView) -> torch.Tensor:
    """[P, N, head_dim] keys averaged over heads, L2-normalised (VisionZip's metric)."""
    P, N, D = view.keys.shape
    keys = view.keys.float().view(P, N, view.key_heads, D // view.key_heads).mean(2)
    return torch.nn.functional.normalize(keys, dim=-1)


@register("visionzip", merges=True)
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
    metric = head_mean_keys(view)
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
        rows = torch.zeros(targets.numel(), view.tokens, device=device)
        rows[torch.arange(targets.numel()), targets.to(device)] = 1.0  # the target itself
        if others.numel():
            similarity = metric[p][others.to(device)] @ metric[p][targets.to(device)].T  # [others, targets]
            nearest = similarity.argmax(-1)
            assign = torch.zeros(targets.numel(), view.tokens, device=device)
            assign[nearest, others.to(device)] = 1.0
            rows += assign / assign.sum(-1, keepdim=True).clamp_min(1.0)  # + mean of the assigned tokens
        weights[p, targets.to(device)] = rows
    return Selection(keep, budgets, weights)
