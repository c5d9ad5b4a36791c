"""One module per model family (geometry only), and the one table of them, keyed by model type.

Loading, presets, bench and the backends all read :data:`FAMILIES`. Adding a family is its module
here (a :class:`~hired.families.base.Family`; its docstring lists what to implement) and a line in
this table, one row in each backend's table (``hired.backends.hf.table``,
``hired.backends.vllm.table``) and one preset record (``hired.presets``); the family contract
test (tests/test_family_contract.py) is then the only per-family test it needs.
"""

from __future__ import annotations

from typing import Any

from hired.errors import UnsupportedModelError
from hired.families.base import EncoderShape, Family, ImageInput
from hired.families.internvl import InternVLFamily
from hired.families.llava import LlavaFamily
from hired.families.llava_next import LlavaNextFamily
from hired.families.llava_onevision import LlavaOnevisionFamily
from hired.families.qwen_vl import Qwen3VLFamily, Qwen25VLFamily

FAMILIES: dict[str, Family] = {
    family.name: family for family in (LlavaNextFamily(), LlavaFamily(), InternVLFamily(), LlavaOnevisionFamily(),
                                       Qwen25VLFamily(), Qwen3VLFamily())
}
BY_MODEL_TYPE: dict[str, Family] = {t: family for family in FAMILIES.values() for t in family.model_types}


def supported() -> str:
    return ", ".join(sorted(BY_MODEL_TYPE))


def family_for_config(model_config: Any) -> Family:
    """The family of a transformers config (its ``model_type``)."""
    model_type = getattr(model_config, "model_type", None)
    if model_type not in BY_MODEL_TYPE:
        raise UnsupportedModelError(f"model type {model_type!r} is not supported; hired supports {supported()}")
    return BY_MODEL_TYPE[model_type]


__all__ = ["BY_MODEL_TYPE", "FAMILIES", "EncoderShape", "Family", "ImageInput", "family_for_config", "supported"]
