"""Checkpoint weight names as vLLM's LLaVA models expect them.

transformers 5 builds ``CLIPVisionModel`` without its ``vision_model`` level, so checkpoints it
saves (hired's demo model among them) name vision weights ``vision_tower.embeddings...``
(``model.vision_tower.embeddings...`` in the newer layout); vLLM 0.32's CLIP keeps the level
(``vision_tower.vision_model.embeddings...``) and its LLaVA loaders map only the ``model.``
prefixes, so such a checkpoint fails to load ("There is no module or parameter named
'vision_tower.embeddings'"). The plugin's model classes rename on the fly, so a checkpoint loads
as shipped; names that already have the level (checkpoints of older transformers, e.g. the
llava-hf ones) pass unchanged. Pure Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
PREFIXES = ("model.vision_tower.", "vision_tower.")


def vision_tower_key(name: str) -> str:
    """``vision_tower.X`` -> ``vision_tower.vision_model.X`` (also under ``model.``) unless X
    already starts with ``vision_model.``."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            return name if rest.startswith("vision_model.") else f"{prefix}vision_model.{rest}"
    return name


def rename_vision_tower(weights: Iterable[tuple[str, T]]) -> Iterator[tuple[str, T]]:
    for name, tensor in weights:
        yield vision_tower_key(name), tensor
