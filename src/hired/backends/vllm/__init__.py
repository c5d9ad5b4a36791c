"""HiRED inside vLLM: a ``vllm.general_plugins`` entry point (``pip install "hired[vllm]"``).

What runs where (vLLM calls :func:`register` in every process it starts):

- **every process**: :func:`register` points each architecture of the vLLM table
  (:mod:`~hired.backends.vllm.table`: ``LlavaNextForConditionalGeneration``,
  ``LlavaForConditionalGeneration``) at hired's subclass (lazily, by "module:Class" name), adds
  a start-up check for each, and checks the ``HIRED_*`` environment;
- **process 0** (``vllm serve`` / ``LLM(...)``), while vLLM builds its model config: the check
  reads the settings (``hf_overrides`` keys over environment variables,
  :mod:`~hired.backends.vllm.settings`); a bad or unservable value stops start-up with one line;
- **front end** (multimodal processor): each image's placeholder count is
  :func:`hired.planned_tokens` (:mod:`~hired.backends.vllm.processing`);
- **each worker** (:mod:`~hired.backends.vllm.models`): hooks on the ``qkv_proj`` of the early
  and final scoring layers of vLLM's CLIP give the CLS row of attention without an N x N matrix
  (tensor parallel: per-rank partial sums over heads, all-reduced, :mod:`~hired.backends.vllm.scoring`);
  the same policy and plan as the transformers backend cut each image's embeddings
  (:mod:`~hired.backends.vllm.runner`).

Unconfigured (no ``HIRED_BUDGET`` / ``hired_budget``), the subclasses call vLLM's own methods
only: vLLM runs unchanged. They always map transformers-5 vision weight names
(:mod:`~hired.backends.vllm.weights`), so hired's demo model loads as shipped.
"""

from __future__ import annotations

from hired.backends.vllm.table import VLLM_MODELS

ARCHS = {row.arch: row.target for row in VLLM_MODELS.values()}
_registered = False


def register() -> None:
    """Entry point of ``vllm.general_plugins``: idempotent and cheap (vLLM calls it in every
    process, possibly more than once)."""
    global _registered
    if _registered:
        return
    from hired.backends.vllm.settings import VLLMSettingError, fail, read_config

    try:
        read_config()  # the environment alone, as early as possible
    except VLLMSettingError as error:
        fail(error)
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from hired.backends.vllm.startup import startup_check

    for arch, target in ARCHS.items():
        ModelRegistry.register_model(arch, target)
        MODELS_CONFIG_MAP[arch] = startup_check(MODELS_CONFIG_MAP.get(arch))
    _registered = True


__all__ = ["ARCHS", "register"]
