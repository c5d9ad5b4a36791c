"""HiRED settings under vLLM: read from the environment and from ``hf_overrides``, checked once.

A vLLM general plugin's ``register()`` gets no arguments, and vLLM hands its ``additional_config``
to the model but not to the multimodal processor that sizes the prompt, so the settings travel
the two ways that reach both sides (every process vLLM starts inherits the environment;
``hf_overrides`` lands on the HF config that the processor and the model both read):

=================  ======================  ===========================================
environment        ``hf_overrides`` key     meaning (see :class:`hired.HiREDConfig`)
=================  ======================  ===========================================
HIRED_BUDGET       hired_budget             0.2 (a ratio) or 576 (tokens per image)
HIRED_ALPHA        hired_alpha              share of the budget for the full view
HIRED_METHOD       hired_method             a fixed-budget policy (default ``hired``)
HIRED_ALLOCATION   hired_allocation         ``exact`` (default) or ``official``
HIRED_NEWLINES     hired_newlines           ``all`` (vLLM default) or ``none``
HIRED_INIT_LAYER   hired_init_layer         early scoring layer (default: the family's)
HIRED_FINAL_LAYER  hired_final_layer        ranking layer (default: the feature layer)
HIRED_SEED         hired_seed               seed of the ``random`` policy
HIRED_SCORE        hired_score              ``cls`` or ``received`` (default: by encoder)
=================  ======================  ===========================================

Every value is parsed by :meth:`hired.HiREDConfig.from_strings`, the parser of the CLI and of
lmms-eval too (method names such as ``hired-received`` included).

An ``hf_overrides`` key wins over the environment variable; an ``hf_overrides`` key starting
with ``hired`` or a ``HIRED_*`` variable that is none of the above (nor ``HIRED_VLLM``, the
serve-bench's) is refused (vLLM would keep it quietly and serve the
model unmodified). HiRED is on when a budget is given;
other keys without a budget are an error, as is any bad value: :class:`VLLMSettingError`, one
line naming the setting and where it came from. vLLM writes each image's placeholders into the
prompt before the forward, so only settings whose count is known from the image size
(:func:`hired.planned_tokens` not ``None``) can be served: newlines default to ``"all"`` here
(hired's own default, ``"kept_rows"``, depends on the scores), and adaptive methods or the
official allocation below 100% are refused.

Pure Python: no vLLM import, so the main test suite checks it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from hired.config import PARSERS, HiREDConfig
from hired.errors import ConfigError
from hired.policies import POLICIES, policy
from hired.recipe import Recipe

FIELDS = tuple(PARSERS)  # every HiREDConfig field, read by HiREDConfig.from_strings
ENV = {field: f"HIRED_{field.upper()}" for field in FIELDS}
HF_KEYS = {field: f"hired_{field}" for field in FIELDS}
VLLM_DEFAULT_NEWLINES = "all"


class VLLMSettingError(ConfigError):
    """A HiRED setting given to vLLM is bad or cannot be served; the message is one line."""


def fail(error: Exception):
    """Stop start-up: one line on stderr under the ``vllm`` command (no traceback), else raise."""
    if os.path.basename(sys.argv[0] if sys.argv else "") == "vllm":
        raise SystemExit(str(error))
    raise error


# HIRED_* variables that are not settings: `hired serve-bench --vllm` and the CI's vLLM venv.
OTHER_ENV = ("HIRED_VLLM", "HIRED_VLLM_VENV")


def check_names(given: Any, known: Any, what: str) -> None:
    """VLLMSettingError naming each of ``given`` that looks like one of hired's ``known`` names but
    is none of them (``hired_budgt``, ``HIRED_BUGDET``): unread, the model was served unmodified."""
    import difflib

    unknown = sorted(key for key in given if key.lower().startswith("hired") and key not in known)
    if unknown:
        close = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
        named = ", ".join(f"{key!r}" + (f" (did you mean {close[key][0]!r}?)" if close[key] else "")
                          for key in unknown)
        raise VLLMSettingError(f"hired: unknown {what}{'s' if len(unknown) > 1 else ''} {named}; "
                               f"hired's: {', '.join(k for k in known if k not in OTHER_ENV)}")


def check_override_keys(hf_config: Any, environ: Mapping[str, str]) -> None:
    """Unknown ``hf_overrides`` keys and ``HIRED_*`` variables refused (see :func:`check_names`)."""
    check_names(getattr(hf_config, "__dict__", {}) if hf_config is not None else {}, list(HF_KEYS.values()),
                "hf_overrides key")
    check_names([k for k in environ if k.startswith("HIRED_")], [*ENV.values(), *OTHER_ENV], "environment variable")


def raw_settings(hf_config: Any = None, environ: Mapping[str, str] | None = None) -> dict[str, tuple[Any, str]]:
    """Each given setting as (value, source name): the ``hf_overrides`` key on ``hf_config``
    first, else the environment variable (empty strings count as unset)."""
    environ = os.environ if environ is None else environ
    check_override_keys(hf_config, environ)
    found: dict[str, tuple[Any, str]] = {}
    for field in FIELDS:
        value = getattr(hf_config, HF_KEYS[field], None) if hf_config is not None else None
        if value is not None:
            found[field] = (value, f"hf_overrides {HF_KEYS[field]}")
            continue
        text = environ.get(ENV[field], "")
        if text.strip():
            found[field] = (text, ENV[field])
    return found


def read_config(hf_config: Any = None, environ: Mapping[str, str] | None = None) -> HiREDConfig | None:
    """The HiRED config vLLM should serve, or ``None`` when HiRED is not configured (vLLM then
    runs unchanged). Raises :class:`VLLMSettingError` (one line) on a bad or unservable value."""
    found = raw_settings(hf_config, environ)
    if not found:
        return None
    names = {field: source for field, (_, source) in found.items()}
    if "budget" not in found:
        given = ", ".join(f"{source}={value!r}" for value, source in found.values())
        raise VLLMSettingError(f"hired: {given} given without a budget; set HIRED_BUDGET (or hf_overrides "
                               f"hired_budget), e.g. 0.2")
    values = {field: value for field, (value, _) in found.items()}
    values.setdefault("newlines", VLLM_DEFAULT_NEWLINES)
    try:
        config = HiREDConfig.from_strings(values, names)
    except ConfigError as error:
        raise VLLMSettingError(f"hired: {error}") from None
    try:
        policy(config.method)
    except ConfigError as error:
        method = f"{found['method'][1]}={found['method'][0]!r}" if "method" in found else "method"
        raise VLLMSettingError(f"hired: bad setting {method}: {error}") from None
    check_servable(config, found)
    return config


def fixed_budget_methods() -> list[str]:
    return [name for name, spec in POLICIES.items() if spec.fixed_budget]


def check_servable(config: HiREDConfig, found: dict[str, tuple[Any, str]] | None = None) -> None:
    """Refuse a config whose image-token count depends on the picture's content: vLLM writes each
    image's placeholders into the prompt before the forward."""
    found = found or {}

    def name(field: str) -> str:
        return f"{found[field][1]}={found[field][0]!r}" if field in found else f"{field}={getattr(config, field)!r}"

    if not policy(config.method).count_known(config):
        raise VLLMSettingError(
            f"hired: {name('method')} with {name('allocation')} and budget {config.budget!r} keeps a number of tokens "
            f"that depends on the picture; vLLM sizes each image's prompt before the forward, so serve a "
            f"fixed-budget method ({', '.join(fixed_budget_methods())}) with allocation exact"
        )
    if config.newline_policy == "kept_rows":
        raise VLLMSettingError(
            f"hired: {name('newlines')}: which rows keep a token depends on the picture; vLLM needs the count from "
            f"the image size, so use newlines 'all' (the default under vLLM) or 'none'"
        )


def vllm_built_layers(hf_config: Any) -> int:
    """Vision layers vLLM's LLaVA builds: up to the deepest feature layer (for the usual -2, all
    but the last), unlike transformers, which builds them all."""
    count = int(hf_config.vision_config.num_hidden_layers)
    layers = hf_config.vision_feature_layer
    layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    return max(count + layer + 1 if layer < 0 else layer for layer in layers)


def check_layers(hf_config: Any, config: HiREDConfig, built: int | None = None) -> Recipe:
    """The recipe of ``config`` on this model, its scoring layers (the family's and the policy's
    choice) inside the tower vLLM builds."""
    try:
        recipe = Recipe.build(hf_config, config)
    except ConfigError as error:
        raise VLLMSettingError(f"hired: {error}") from None
    built = vllm_built_layers(hf_config) if built is None else built
    deepest = max(recipe.score_layers)
    if deepest >= built:
        raise VLLMSettingError(
            f"hired: method {config.method!r} scores at vision layer {deepest}, but vLLM builds only the first "
            f"{built} layers of this model's ViT (up to its feature layer); set HIRED_FINAL_LAYER below {built} "
            f"or serve another method"
        )
    return recipe


def describe(config: HiREDConfig | None) -> str:
    """One line for logs."""
    if config is None:
        return "hired: not configured (vLLM runs unchanged)"
    return "hired: " + " ".join(f"{key}={value!r}" for key, value in config.to_dict().items())
