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
HIRED_INIT_LAYER   hired_init_layer         early scoring layer (default 0)
HIRED_FINAL_LAYER  hired_final_layer        ranking layer (default: the feature layer)
HIRED_SEED         hired_seed               seed of the ``random`` policy
=================  ======================  ===========================================

An ``hf_overrides`` key wins over the environment variable. HiRED is on when a budget is given;
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
from collections.abc import Mapping
from typing import Any

from hired.config import HiREDConfig, parse_budget
from hired.errors import ConfigError
from hired.policies import check_method, is_count_known

FIELDS = ("budget", "alpha", "method", "allocation", "newlines", "init_layer", "final_layer", "seed")
ENV = {field: f"HIRED_{field.upper()}" for field in FIELDS}
HF_KEYS = {field: f"hired_{field}" for field in FIELDS}
VLLM_DEFAULT_NEWLINES = "all"


class VLLMSettingError(ConfigError):
    """A HiRED setting given to vLLM is bad or cannot be served; the message is one line."""


def _int(text: Any) -> int:
    if isinstance(text, bool):
        raise ValueError(text)
    if isinstance(text, int):
        return text
    if isinstance(text, float) and text.is_integer():
        return int(text)
    return int(str(text).strip())


def _float(text: Any) -> float:
    if isinstance(text, bool):
        raise ValueError(text)
    return float(text)


def _str(text: Any) -> str:
    return str(text).strip()


def _budget(value: Any) -> float | int:
    if isinstance(value, bool):
        raise ConfigError(f"budget must be a ratio like 0.2 or a token count like 576, got {value!r}")
    if isinstance(value, (int, float)):
        HiREDConfig(budget=value)
        return value
    return parse_budget(str(value))


PARSERS = {"budget": _budget, "alpha": _float, "method": _str, "allocation": _str, "newlines": _str,
           "init_layer": _int, "final_layer": _int, "seed": _int}


def raw_settings(hf_config: Any = None, environ: Mapping[str, str] | None = None) -> dict[str, tuple[Any, str]]:
    """Each given setting as (value, source name): the ``hf_overrides`` key on ``hf_config``
    first, else the environment variable (empty strings count as unset)."""
    environ = os.environ if environ is None else environ
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


def _where(found: dict[str, tuple[Any, str]], field: str) -> str:
    value, source = found[field]
    return f"{source}={value!r}"


def read_config(hf_config: Any = None, environ: Mapping[str, str] | None = None) -> HiREDConfig | None:
    """The HiRED config vLLM should serve, or ``None`` when HiRED is not configured (vLLM then
    runs unchanged). Raises :class:`VLLMSettingError` (one line) on a bad or unservable value."""
    found = raw_settings(hf_config, environ)
    if not found:
        return None
    if "budget" not in found:
        names = ", ".join(_where(found, f) for f in found)
        raise VLLMSettingError(f"hired: {names} given without a budget; set HIRED_BUDGET (or hf_overrides "
                               f"hired_budget), e.g. 0.2")
    values: dict[str, Any] = {}
    for field in found:
        try:
            values[field] = PARSERS[field](found[field][0])
        except (ValueError, TypeError) as error:
            detail = str(error) if isinstance(error, ConfigError) else f"not a valid {field}"
            raise VLLMSettingError(f"hired: bad setting {_where(found, field)}: {detail}") from None
    values.setdefault("newlines", VLLM_DEFAULT_NEWLINES)
    try:
        config = HiREDConfig(**values)
    except ConfigError as error:
        field = next((f for f in found if f in str(error)), "budget")
        raise VLLMSettingError(f"hired: bad setting {_where(found, field)}: {error}") from None
    try:
        check_method(config.method)
    except ConfigError as error:
        raise VLLMSettingError(f"hired: bad setting {_where(found, 'method')}: {error}") from None
    check_servable(config, found)
    return config


def fixed_budget_methods() -> list[str]:
    from hired.policies import POLICIES

    return [name for name in POLICIES if is_count_known(HiREDConfig(method=name))]


def check_servable(config: HiREDConfig, found: dict[str, tuple[Any, str]] | None = None) -> None:
    """Refuse a config whose image-token count depends on the picture's content."""
    found = found or {}

    def name(field: str) -> str:
        return _where(found, field) if field in found else f"{field}={getattr(config, field)!r}"

    if not is_count_known(config):
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


def check_layers(hf_config: Any, config: HiREDConfig, built: int | None = None) -> None:
    """The scoring layers (the family's and the policy's choice) exist in the tower vLLM builds."""
    from hired.families import family_for_config

    try:
        requests = family_for_config(hf_config).score_requests(hf_config, config)
    except ConfigError as error:
        raise VLLMSettingError(f"hired: {error}") from None
    built = vllm_built_layers(hf_config) if built is None else built
    deepest = max(request.layer for request in requests.values())
    if deepest >= built:
        raise VLLMSettingError(
            f"hired: method {config.method!r} scores at vision layer {deepest}, but vLLM builds only the first "
            f"{built} layers of this model's ViT (up to its feature layer); set HIRED_FINAL_LAYER below {built} "
            f"or serve another method"
        )


def describe(config: HiREDConfig | None) -> str:
    """One line for logs."""
    if config is None:
        return "hired: not configured (vLLM runs unchanged)"
    return (f"hired: budget={config.budget!r} alpha={config.alpha} method={config.method} "
            f"allocation={config.allocation} newlines={config.newline_policy} init_layer={config.init_layer} "
            f"final_layer={config.final_layer}")
