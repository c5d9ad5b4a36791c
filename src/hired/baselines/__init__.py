"""Baseline drop policies, registered by name in :mod:`hired.methods` on import.

Fixed-budget (keep exactly ``view.budget`` tokens, or all valid ones):
    ``random``, ``spatial``, ``prumerge-fixed``, ``prumerge+-fixed``, ``visionzip``
Adaptive (choose their own count per partition; the report shows it):
    ``prumerge``, ``prumerge+``

Every policy has the signature ``fn(view: ImageView, config: HiREDConfig) -> Selection`` and never
keeps a token outside ``view.valid``. Shared pieces live in :mod:`hired.baselines.common`.
"""

from hired.baselines import prumerge, random_tokens, spatial, visionzip  # noqa: F401  (register policies)

FIXED_BUDGET = ("random", "spatial", "prumerge-fixed", "prumerge+-fixed", "visionzip")
ADAPTIVE = ("prumerge", "prumerge+")
