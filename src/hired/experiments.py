"""Arms of an experiment: the full model, or one method at one budget. Shared by `hired bench`
and `hired eval` (and anything else that compares methods)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hired.config import HiREDConfig
from hired.policies import policy

FULL = "full"


@dataclass(frozen=True)
class Arm:
    """One method at one budget (the full model has no budget). An adaptive method (one that
    picks its own count, such as ``prumerge+``) ignores the budget: it is one arm, ``adaptive``."""

    method: str
    budget: float | int | None = None
    adaptive: bool = False

    @property
    def key(self) -> str:
        return self.method if self.budget is None or self.adaptive else f"{self.method}@{self.budget}"

    def config(self, alpha: float = 0.5, seed: int = 0, **settings: Any) -> HiREDConfig | None:
        """The HiREDConfig of this arm (None for the full model), other fields from ``settings``
        (as :meth:`HiREDConfig.from_strings` reads them); raises ConfigError when bad."""
        if self.method == FULL:
            return None
        config = HiREDConfig.from_strings({**settings, "budget": self.budget, "alpha": alpha, "seed": seed,
                                           "method": self.method})
        policy(config.method)
        return config


def method_config(name: str, budget: float | int = 0.2, alpha: float = 0.5, seed: int = 0,
                  **settings: Any) -> HiREDConfig:
    """The config of a method name as every command accepts it ("hired-official" and the
    "-received" score suffix, as "hired-received", included)."""
    config = Arm(name, budget).config(alpha, seed, **settings)
    if config is None:
        raise ValueError("the full model has no HiRED config")
    return config


def make_arms(methods: Iterable[str], budgets: Iterable[float | int], alpha: float = 0.5, seed: int = 0,
              **settings: Any) -> list[Arm]:
    """The full model once, then every other method at every budget (validated now, with
    ``alpha``, ``seed`` and ``settings``); an adaptive method, whose count does not depend on the
    budget, once."""
    budgets = list(budgets)
    arms = [Arm(FULL)]
    for method in dict.fromkeys(methods):
        if method == FULL:
            continue
        for budget in budgets:
            arm = Arm(method, budget)
            config = arm.config(alpha, seed, **settings)  # a clear ConfigError for unknown methods or bad values
            if not policy(config.method).fixed_budget:
                arms.append(Arm(method, budget, adaptive=True))
                break
            arms.append(arm)
    return arms


def budget_label(row: dict[str, Any]) -> str:
    """A result row's budget as the tables show it: ``all`` (the full model), ``adaptive`` or the budget."""
    if row["budget"] is None:
        return "all"
    return "adaptive" if row.get("adaptive") else str(row["budget"])
