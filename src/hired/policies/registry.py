"""Drop policies by name (a leaf: it imports only core and the config).

A policy is ``fn(view: ImageView, config: HiREDConfig) -> Selection``: one image's scores in, a
keep mask out, with no model or backend knowledge, so every family and backend runs every
policy. Register one with ``@register("name")``; ``hired.policies`` imports the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hired.config import HiREDConfig
from hired.core.plan import Policy
from hired.errors import ConfigError

POLICIES: dict[str, Policy] = {}
NEEDS_KEYS: set[str] = set()  # policies that merge: the backend passes keys and merges before the projector
# Whether a policy keeps exactly min(budget, valid tokens) under a config, so that the image-token
# count is known from the image size alone (hired.planned_tokens; serving engines need it).
COUNT_KNOWN: dict[str, Callable[[HiREDConfig], bool]] = {}


@dataclass(frozen=True)
class Scoring:
    """Which CLS attention a policy ranks by (``view.final_scores``), when the config names no
    ``final_layer``: ``layer`` "feature" (the layer that produces the model's features) or "last"
    (the encoder's last layer); ``single_head``: the full width as one head (scale D^-0.5), as
    PruMerge's reference computes it, instead of per-head softmax summed over heads."""

    layer: Literal["feature", "last"] = "feature"
    single_head: bool = False


SCORING: dict[str, Scoring] = {}


def register(
    name: str,
    needs_keys: bool = False,
    count_known: bool | Callable[[HiREDConfig], bool] = True,
    scoring: Scoring = Scoring(),  # noqa: B008  (frozen, shared safely)
) -> Callable[[Policy], Policy]:
    """Add a policy under ``name``. needs_keys: the policy merges; the backend passes the final
    layer's keys and applies its merge weights to the vision features before the projector.
    count_known: False for adaptive policies that choose their own count, or a function of the
    config where that depends on options. scoring: which CLS attention ranks the tokens."""

    def add(fn: Policy) -> Policy:
        POLICIES[name] = fn
        if needs_keys:
            NEEDS_KEYS.add(name)
        COUNT_KNOWN[name] = count_known if callable(count_known) else (lambda _config, known=count_known: known)
        SCORING[name] = scoring
        return fn

    return add


def check_method(name: str) -> None:
    if name not in POLICIES:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(POLICIES))}")


def get_policy(name: str) -> Policy:
    check_method(name)
    return POLICIES[name]


def scoring_of(name: str) -> Scoring:
    check_method(name)
    return SCORING[name]


def is_count_known(config: HiREDConfig) -> bool:
    """True when ``config``'s policy keeps exactly min(budget, valid tokens) for every image."""
    check_method(config.method)
    return COUNT_KNOWN[config.method](config)


def is_fixed_budget(name: str) -> bool:
    """A policy that keeps its budget (not an adaptive one that picks its own count)."""
    check_method(name)
    return COUNT_KNOWN[name](HiREDConfig(method=name))
