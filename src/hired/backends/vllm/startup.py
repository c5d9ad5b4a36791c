"""The start-up check (process 0, while vLLM builds its configs): HiRED's settings from the
environment and ``hf_overrides`` are read once there, so a bad or unservable value stops vLLM
before any engine process starts. Hooked into vLLM's per-architecture config hooks
(``vllm.model_executor.models.config.MODELS_CONFIG_MAP``), chaining any hook vLLM already has.
"""

from __future__ import annotations

from typing import Any

from hired.backends.vllm.settings import HF_KEYS, VLLMSettingError, check_layers, fail, read_config


def check_model_config(model_config: Any) -> None:
    """Read and check HiRED's settings against the model's HF config (``hf_overrides`` applied),
    then write the checked config into the HF config as ``hired_*`` keys: the config travels to
    every worker with vLLM's model config, so a worker whose environment lacks ``HIRED_*`` (Ray
    copies only some prefixes; another node has its own) serves what the front end planned."""
    hf_config = model_config.hf_config
    try:
        config = read_config(hf_config)
        if config is not None:
            check_layers(hf_config, config)
            for field, value in config.to_dict().items():
                if value is not None:
                    setattr(hf_config, HF_KEYS[field], value)
            strategy = getattr(hf_config, "vision_feature_select_strategy", "default")
            if strategy != "default":
                raise VLLMSettingError(f"hired: vision_feature_select_strategy={strategy!r} is not supported; hired "
                                       f"needs 'default' (CLS dropped)")
    except VLLMSettingError as error:
        fail(error)
    except ValueError as error:  # hired's own ConfigError (e.g. a layer out of range)
        fail(VLLMSettingError(f"hired: {error}"))


def startup_check(previous: type | None) -> type:
    """A vLLM config-hook class that runs vLLM's own hook for the architecture (if any), then
    :func:`check_model_config`."""
    from vllm.model_executor.models.config import VerifyAndUpdateConfig

    base = previous or VerifyAndUpdateConfig
    if getattr(base, "hired_check", False):
        return base

    class HiREDStartupCheck(base):  # type: ignore[misc, valid-type]
        hired_check = True

        @staticmethod
        def verify_and_update_model_config(model_config: Any) -> None:
            base.verify_and_update_model_config(model_config)
            check_model_config(model_config)

    return HiREDStartupCheck
