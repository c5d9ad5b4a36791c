"""HiREDConfig: the token budget and how it is spent. Validated on construction.

A leaf module: it imports nothing of hired but the errors, so every room can read a config. The
budget is turned into a token count in one place (:meth:`HiREDConfig.budget_tokens`) and parsed
from text in one place (:func:`parse_budget`, :func:`parse_budgets`). Whether ``method`` names a
registered policy is checked where policies are looked up (``hired.policies.get_policy``), which
``hired.apply`` and every command do before touching a model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from hired.errors import ConfigError

Allocation = Literal["exact", "official"]
Newlines = Literal["kept_rows", "all", "none"]
Score = Literal["cls", "received"]
SCORES = ("cls", "received")


@dataclass(frozen=True)
class HiREDConfig:
    """How many visual tokens to keep and how to choose them.

    budget: a float in (0, 1] is a share of all partition tokens of an image (0.2 = 20% of
        P x 576 for LLaVA-NeXT); an int >= 1 is a token count per image. ``1.0`` keeps every
        token, ``1`` keeps one.
    alpha: share of the budget given to the full-image view (phase 1); the rest goes to the
        sub-images in proportion to their visual content.
    init_layer: vision-encoder layer (0-based, negative counts from the end) whose CLS
        attention on the full view measures each sub-image's content.
    final_layer: layer whose CLS attention ranks tokens (phase 2). ``None`` = the layer that
        produces the features the model uses (``vision_feature_layer``, -2 for LLaVA).
    allocation: ``"exact"`` keeps exactly the budget with region-correct sub-image shares;
        ``"official"`` reproduces the published HiRED code (floor rounding, slot counting).
    newlines: image-newline tokens after sub-image rows: ``"kept_rows"`` (rows keeping at least
        one token), ``"all"`` (every row, like the unmodified model) or ``"none"``.
        ``None`` = ``"kept_rows"`` for exact mode, ``"none"`` for official mode (as published).
    method: the drop policy; ``"hired"`` is the paper's method.
    seed: seed (an int >= 0) for policies that draw random numbers.
    score: what ranks tokens (and, for HiRED's phase 1, measures content): ``"cls"``, the CLS
        token's attention (the paper); ``"received"``, the mean attention each token receives
        over all queries and heads, the substitute for encoders with no CLS token (SigLIP in
        LLaVA-OneVision); also usable on CLS encoders. ``None`` = ``"cls"`` where the encoder
        has a CLS token, else ``"received"``.

    Every field is type- and range-checked here: a bad value raises ConfigError at once.
    """

    budget: float | int = 0.2
    alpha: float = 0.5
    init_layer: int = 0
    final_layer: int | None = None
    allocation: Allocation = "exact"
    newlines: Newlines | None = None
    method: str = "hired"
    seed: int = 0
    score: Score | None = None

    def __post_init__(self) -> None:
        budget = self.budget
        if isinstance(budget, bool) or not isinstance(budget, (int, float)):
            raise ConfigError(f"budget must be a float ratio in (0, 1] or an int count >= 1, got {budget!r}")
        if isinstance(budget, float):
            if not math.isfinite(budget) or not 0.0 < budget <= 1.0:
                raise ConfigError(f"budget ratio must be in (0, 1], got {budget}")
        elif budget < 1:
            raise ConfigError(f"budget count must be >= 1 token, got {budget}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha!r}")
        for name in ("init_layer", "final_layer"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{name} must be an int layer index, got {value!r}")
        if self.allocation not in ("exact", "official"):
            raise ConfigError(f"allocation must be 'exact' or 'official', got {self.allocation!r}")
        if self.allocation == "official" and self.alpha == 1.0:
            raise ConfigError("alpha=1 is undefined in official allocation (the published code marks no token and "
                              "divides by zero); use alpha < 1 or allocation='exact'")
        if self.newlines not in (None, "kept_rows", "all", "none"):
            raise ConfigError(f"newlines must be 'kept_rows', 'all' or 'none', got {self.newlines!r}")
        if self.score is not None and self.score not in SCORES:
            raise ConfigError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if not isinstance(self.method, str) or not self.method:
            raise ConfigError(f"method must be a policy name such as 'hired', got {self.method!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")

    @property
    def is_ratio(self) -> bool:
        return isinstance(self.budget, float)

    @property
    def newline_policy(self) -> Newlines:
        if self.newlines is not None:
            return self.newlines
        return "none" if self.allocation == "official" else "kept_rows"

    def budget_tokens(self, total_tokens: int) -> int:
        """The budget as a token count for an image with ``total_tokens`` partition tokens: the one
        place a ratio becomes a count (official mode floors, as the published code does)."""
        if not self.is_ratio:
            return int(self.budget)
        if self.allocation == "official":
            return int(total_tokens * self.budget)
        return max(1, round(total_tokens * self.budget))

    def to_dict(self) -> dict:
        return asdict(self)


def parse_budget(text: str) -> float | int:
    """A budget from text (CLI, bench, eval, lmms-eval model args): '0.2' or '1.0' is a ratio,
    '576' is a token count. Range-checked with HiREDConfig's own message."""
    text = str(text).strip()
    try:
        budget: float | int = int(text) if text.lstrip("+-").isdigit() else float(text)
    except ValueError:
        raise ConfigError(f"budget must be a ratio like 0.2 or a token count like 576, got {text!r}") from None
    HiREDConfig(budget=budget)  # range check
    return budget


def parse_budgets(text: str) -> list[float | int]:
    """A comma-separated list of budgets, e.g. '1.0,0.2,0.1' or '576,288'."""
    budgets = [parse_budget(part) for part in str(text).split(",") if part.strip()]
    if not budgets:
        raise ConfigError(f"give at least one budget, e.g. 0.2 or 1.0,0.2; got {text!r}")
    return budgets
