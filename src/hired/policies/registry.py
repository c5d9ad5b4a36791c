"""Drop policies by name (a leaf: it imports only core and the config).

A policy is ``fn(view: ImageView, config: HiREDConfig) -> Selection``: one image's scores in, a
keep mask out, with no model or backend knowledge, so every family and backend runs every
policy. Register one with ``@register("name")``; ``hired.policies`` imports the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable

from hired.config import HiREDConfig
from hired.core.plan import Policy
from hired.errors import ConfigError

POLICIES: dict[str, Policy] = {}
NEEDS_KEYS: set[str] = set()
# Whether a policy keeps exactly min(budget, valid tokens) under a config, so that the image-token
# count is known from the image size alone (hired.planned_tokens; serving engines need it).
COUNT_KNOWN: dict[str, Callable[[HiREDConfig], bool]] = {}


def register(
    name: str, needs_keys: bool = False, count_known: bool | Callable[[HiREDConfig], bool] = True
) -> Callable[[Policy], Policy]:
    """Add a policy under ``name``. needs_keys: the backend passes the final layer's keys (for
    merging). count_known: False for adaptive policies that choose their own count, or a
    function of the config where that depends on options."""

    def add(fn: Policy) -> Policy:
        POLICIES[name] = fn
        if needs_keys:
            NEEDS_KEYS.add(name)
        COUNT_KNOWN[name] = count_known if callable(count_known) else (lambda _config, known=count_known: known)
        return fn

    return add


def check_method(name: str) -> None:
    if name not in POLICIES:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(POLICIES))}")


def get_policy(name: str) -> Policy:
    check_method(name)
    return POLICIES[name]


def is_count_known(config: HiREDConfig) -> bool:
    """True when ``config``'s policy keeps exactly min(budget, valid tokens) for every image."""
    check_method(config.method)
    return COUNT_KNOWN[config.method](config)


def is_fixed_budget(name: str) -> bool:
    """A policy that keeps its budget (not an adaptive one that picks its own count)."""
    check_method(name)
    return COUNT_KNOWN[name](HiREDConfig(method=name))
