"""The start-up check (process 0, while vLLM builds its configs): HiRED's settings from the
environment and ``hf_overrides`` are read once there, so a bad or unservable value (or a vLLM
feature HiRED cannot serve beside: tower/connector LoRA) stops vLLM before any engine process
starts. Hooked into vLLM's per-architecture config hooks
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


def check_vllm_config(vllm_config: Any) -> None:
    """What HiRED cannot serve beside other vLLM features, once the whole config exists: LoRA on
    the vision tower or connector (vLLM sizes its LoRA mapping from each image's full placeholder
    count, which HiRED shortens). LoRA on the language model alone is fine."""
    model_config = getattr(vllm_config, "model_config", None)
    lora = getattr(vllm_config, "lora_config", None)
    if model_config is None or lora is None or not getattr(lora, "enable_tower_connector_lora", False):
        return
    try:
        configured = read_config(model_config.hf_config) is not None
    except VLLMSettingError as error:
        fail(error)
    if configured:
        fail(VLLMSettingError("hired: LoRA on the vision tower or connector (enable_tower_connector_lora) cannot "
                              "be served with HiRED: vLLM sizes its LoRA mapping from the full image-token count; "
                              "serve the LoRA without HiRED, or LoRA on the language model only"))


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

        @staticmethod
        def verify_and_update_config(vllm_config: Any) -> None:
            base.verify_and_update_config(vllm_config)
            check_vllm_config(vllm_config)

    return HiREDStartupCheck
