"""HiREDConfig: the token budget and how it is spent. Validated on construction.

A leaf module: it imports nothing of hired but the errors, so every room can read a config. The
budget is turned into a token count in one place (:meth:`HiREDConfig.budget_tokens`); settings
given as text (CLI options, lmms-eval model args, ``HIRED_*`` variables, vLLM ``hf_overrides``
and per-request ``mm_processor_kwargs``) are parsed in one place, :meth:`HiREDConfig.from_strings`
(which reads method names with :func:`split_method_name`, the one grammar of names such as
"hired-official"). Whether ``method`` names a registered policy is checked where policies are
looked up (``hired.policies.policy``), which ``hired.apply`` and every command do before touching
a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from hired.errors import ConfigError

Allocation = Literal["exact", "official"]
Newlines = Literal["kept_rows", "all", "none"]
Score = Literal["cls", "received"]
SCORES = ("cls", "received")
MAX_SEED = 2**63 - 1  # torch.manual_seed and every generator hired seeds take it; beyond it overflowed


@dataclass(frozen=True)
class HiREDConfig:
    """How many visual tokens to keep and how to choose them.

    budget: a float in (0, 1] is a share of all partition tokens of an image (0.2 = 20% of
        P x 576 for LLaVA-NeXT); an int >= 1 is a token count per image. ``1.0`` keeps every
        token, ``1`` keeps one.
    alpha: share of the budget given to the full-image view (phase 1); the rest goes to the
        sub-images in proportion to their visual content.
    init_layer: vision-encoder layer (0-based, negative counts from the end) whose attention
        measures each region's content (phase 1). ``None`` = the family's early layer: 0, or the
        first layer that attends over the whole picture where early layers attend in windows
        (Qwen2.5-VL).
    final_layer: layer whose CLS attention ranks tokens (phase 2). ``None`` = the layer that
        produces the features the model uses (``vision_feature_layer``, -2 for LLaVA).
    allocation: ``"exact"`` keeps exactly the budget with region-correct sub-image shares;
        ``"official"`` reproduces the published HiRED code (floor rounding, slot counting).
    newlines: image-newline tokens after sub-image rows: ``"kept_rows"`` (rows keeping at least
        one token), ``"all"`` (every row, like the unmodified model) or ``"none"``.
        ``None`` = ``"kept_rows"`` for exact mode, ``"none"`` for official mode (as published).
    method: the drop policy; ``"hired"`` is the paper's method.
    seed: seed (an int in [0, 2**63 - 1]) for policies that draw random numbers.
    score: what ranks tokens (and, for HiRED's phase 1, measures content): ``"cls"``, the CLS
        token's attention (the paper); ``"received"``, the mean attention each token receives
        over all queries and heads, the substitute for encoders with no CLS token (SigLIP in
        LLaVA-OneVision); also usable on CLS encoders. ``None`` = ``"cls"`` where the encoder
        has a CLS token, else ``"received"``.

    Every field is type- and range-checked here: a bad value raises ConfigError at once.
    """

    budget: float | int = 0.2
    alpha: float = 0.5
    init_layer: int | None = None
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
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an int in [0, 2**63 - 1], got {self.seed!r}")

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

    @classmethod
    def from_strings(cls, values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> HiREDConfig:
        """The config of settings given as text or plain values, keyed by field name: the one
        parser of the CLI, lmms-eval, and every engine's settings. Values may be strings
        ("0.2", "576", "none") or already typed; ``None`` or "" leaves a field at its default.
        ``method`` may carry the name grammar ("hired-official", see :func:`split_method_name`).
        ``names`` gives each field's name as the user wrote it (an environment variable, an
        ``hf_overrides`` key) for the messages. An unknown key or a bad value is a ConfigError
        of one line naming the setting."""
        names = names or {}

        def label(field: str) -> str:
            return f"{names.get(field, field)}={values[field]!r}"

        unknown = [key for key in values if key not in PARSERS]
        if unknown:
            raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(repr(names.get(k, k)) for k in unknown)}; settings: {', '.join(PARSERS)}")
        parsed: dict[str, Any] = {}
        for field, value in values.items():
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            try:
                parsed[field] = PARSERS[field](value)
            except ConfigError as error:
                raise ConfigError(f"bad setting {label(field)}: {error}") from None
            except (ValueError, TypeError, OverflowError):
                raise ConfigError(f"bad setting {label(field)}: not a valid {field}") from None
        if "method" in parsed:
            method, implied = split_method_name(parsed["method"])
            for field, value in implied.items():
                if parsed.get(field, value) != value:
                    raise ConfigError(f"bad setting {label('method')}: it implies {field}={value!r}, but "
                                      f"{label(field)} was given")
            parsed.update(implied, method=method)
        try:
            return cls(**parsed)
        except ConfigError as error:
            field = next((f for f in parsed if f in str(error)), None)
            raise ConfigError(f"bad setting {label(field)}: {error}" if field in values else str(error)) from None


OFFICIAL_SUFFIX = "-official"  # "hired-official": HiRED with the published code's allocation
RECEIVED_SUFFIX = "-received"  # "hired-received": ranked by the attention tokens receive, not the CLS row


def split_method_name(name: str) -> tuple[str, dict[str, str]]:
    """A method name as users write it -> (policy name, the fields its suffixes set): the one
    grammar of names. "hired-official" is ``hired`` with ``allocation="official"``;
    "X-received" is X with ``score="received"`` (both: "hired-official-received")."""
    name = str(name).strip()
    implied: dict[str, str] = {}
    if name.endswith(RECEIVED_SUFFIX) and len(name) > len(RECEIVED_SUFFIX):
        name, implied["score"] = name[: -len(RECEIVED_SUFFIX)], "received"
    if name.endswith(OFFICIAL_SUFFIX) and len(name) > len(OFFICIAL_SUFFIX):
        name, implied["allocation"] = name[: -len(OFFICIAL_SUFFIX)], "official"
    return name, implied


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return int(str(value).strip())


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    return float(value)


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_or_none(value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("none", "null", "default") else parse(value)

    return parse_or_none


def _budget(value: Any) -> float | int:
    if isinstance(value, bool):
        raise ConfigError(f"budget must be a ratio like 0.2 or a token count like 576, got {value!r}")
    if isinstance(value, (int, float)):
        HiREDConfig(budget=value)
        return value
    return parse_budget(str(value))


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value.strip()


# How each field is read from text: the one table every settings source goes through.
PARSERS: dict[str, Callable[[Any], Any]] = {
    "budget": _budget, "alpha": _float, "init_layer": _optional(_int), "final_layer": _optional(_int),
    "allocation": _str, "newlines": _str, "method": _str, "seed": _int, "score": _optional(_str),
}
assert set(PARSERS) == {f.name for f in fields(HiREDConfig)}, "every field has a parser"


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
