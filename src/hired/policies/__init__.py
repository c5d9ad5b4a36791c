"""Drop policies, registered by name (see :mod:`hired.policies.registry`).

``hired`` is the paper's method; ``hired+`` (and its ablations ``hired+fusion``, ``hired+dedup``)
is this project's own HiRED-guided extension. Baselines, fixed-budget (keep exactly ``view.budget`` tokens, or
all valid ones): ``random``, ``spatial``, ``prumerge-fixed``, ``prumerge+-fixed``, ``visionzip``.
Adaptive (choose their own count per partition; the report shows it): ``prumerge``, ``prumerge+``.

Every policy has the signature ``fn(view: ImageView, config: HiREDConfig) -> Selection`` and never
keeps a token outside ``view.valid``. Shared pieces of the baselines live in
:mod:`hired.policies.common`. Importing this package registers them all.
"""

from hired.policies import hired, hired_plus, prumerge, random_tokens, spatial, visionzip  # noqa: F401  (register)
from hired.policies.registry import POLICIES, PolicySpec, Scoring, check_method, is_count_known, policy, register

FIXED_BUDGET = ("random", "spatial", "prumerge-fixed", "prumerge+-fixed", "visionzip")
ADAPTIVE = ("prumerge", "prumerge+")

__all__ = [
    "ADAPTIVE",
    "FIXED_BUDGET",
    "POLICIES",
    "PolicySpec",
    "Scoring",
    "check_method",
    "is_count_known",
    "policy",
    "register",
]
