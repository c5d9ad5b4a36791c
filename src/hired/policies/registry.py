"""Drop policies by name: one record per policy (a leaf: it imports only core and the config).

A policy is ``fn(view: ImageView, config: HiREDConfig) -> Selection``: one image's scores in, a
keep mask out, with no model or backend knowledge, so every family and backend runs every
policy. ``@register("name", ...)`` writes one :class:`PolicySpec` (the function and what a
backend must know of it); ``hired.policies`` imports the built-in ones. Method *names* as users
write them ("hired-official", "hired-received") are read by :func:`hired.config.split_method_name`,
the one grammar every tool and engine uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hired.config import HiREDConfig
from hired.core.plan import Policy
from hired.core.view import ImageView, Selection
from hired.errors import ConfigError


@dataclass(frozen=True)
class Scoring:
    """Which attention a policy ranks by (``view.final_scores``), when the config names no
    ``final_layer``: ``layer`` "feature" (the layer that produces the model's features) or "last"
    (the encoder's last layer); ``single_head``: the full width as one head (scale D^-0.5), as
    PruMerge's reference computes it, instead of per-head softmax summed over heads."""

    layer: Literal["feature", "last"] = "feature"
    single_head: bool = False


@dataclass(frozen=True)
class PolicySpec:
    """One registered policy.

    select: the policy function. merges: it merges dropped tokens into kept ones (the backend
    passes the final layer's keys and applies its merge weights to the vision features before
    the projector). count_known: whether it keeps exactly min(budget, valid tokens) under a
    config, so that the image-token count is known from the image size alone (serving engines
    need it; false for adaptive policies). scoring: which attention ranks the tokens.
    """

    name: str
    select: Policy
    merges: bool = False
    count_known: Callable[[HiREDConfig], bool] = lambda _config: True
    scoring: Scoring = Scoring()

    def __call__(self, view: ImageView, config: HiREDConfig) -> Selection:
        return self.select(view, config)

    @property
    def fixed_budget(self) -> bool:
        """Keeps its budget (not an adaptive policy that picks its own count)."""
        return self.count_known(HiREDConfig(method=self.name))


POLICIES: dict[str, PolicySpec] = {}


def register(
    name: str,
    merges: bool = False,
    count_known: bool | Callable[[HiREDConfig], bool] = True,
    scoring: Scoring = Scoring(),  # noqa: B008  (frozen, shared safely)
) -> Callable[[Policy], Policy]:
    """Add a policy under ``name`` (see :class:`PolicySpec` for the options); returns the
    function unchanged, so it stays importable and testable on its own."""

    def add(fn: Policy) -> Policy:
        known = count_known if callable(count_known) else (lambda _config, known=count_known: known)
        POLICIES[name] = PolicySpec(name, fn, merges, known, scoring)
        return fn

    return add


def policy(name: str) -> PolicySpec:
    """The record of a registered policy; ConfigError naming the known ones otherwise."""
    spec = POLICIES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(POLICIES))}")
    return spec


def check_method(name: str) -> None:
    policy(name)


def is_count_known(config: HiREDConfig) -> bool:
    """True when ``config``'s policy keeps exactly min(budget, valid tokens) for every image."""
    return policy(config.method).count_known(config)
