"""The front end's count of placeholders per picture, cached: vLLM asks for every image of every
request, and a plan costs milliseconds (a LLaVA-NeXT-7B layout ~5 ms on one thread), while the
answer depends only on the model config, the settings and the picture's size. Imports nothing
of vLLM (:mod:`hired.backends.vllm.processing` binds it to vLLM's processing info)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from hired.backends.vllm.settings import VLLMSettingError, read_config
from hired.recipe import Recipe

COUNTS_KEPT = 4096  # picture sizes remembered per model (oldest dropped first)


@dataclass
class PlaceholderCounts:
    """One model's settings (``None``: HiRED not configured) and the counts planned so far."""

    recipe: Recipe | None
    counts: dict[tuple[int, int, int], int] = field(default_factory=dict)

    def count(self, height: int, width: int, full: int) -> int:
        key = (height, width, full)
        planned = self.counts.get(key)
        if planned is None:
            planned = self.plan(height, width, full)
            if len(self.counts) >= COUNTS_KEPT:
                self.counts.pop(next(iter(self.counts)))
            self.counts[key] = planned
        return planned

    def plan(self, height: int, width: int, full: int) -> int:
        recipe = self.recipe
        if recipe is None:
            return full
        layout = recipe.layout((height, width))
        if layout.length != full:  # hired's layout must be vLLM's packing, token for token
            raise VLLMSettingError(f"hired: vLLM packs a {height}x{width} image into {full} tokens but hired's "
                                   f"{recipe.family.name} layout has {layout.length}; this model's geometry is not "
                                   f"supported")
        planned = recipe.planned_tokens((height, width))
        if planned is None:  # read_config refuses such configs; kept as a guard
            raise VLLMSettingError(f"hired: the image-token count of {recipe.config.method} is not known from the "
                                   f"size")
        return planned


# id(model config) -> (a weak reference to it, its counts); configs are unhashable, and an entry
# leaves with its config
_BY_CONFIG: dict[int, tuple[weakref.ref, PlaceholderCounts]] = {}


def image_tokens(hf_config: Any, height: int, width: int, full: int) -> int:
    """Placeholders for one image: ``full`` (vLLM's count) unless HiRED is configured, else
    :func:`hired.planned_tokens`'s; the settings are read once per model config."""
    ref, counts = _BY_CONFIG.get(id(hf_config), (None, None))
    if ref is None or ref() is not hf_config:
        config = read_config(hf_config)
        counts = PlaceholderCounts(Recipe.build(hf_config, config) if config is not None else None)
        _BY_CONFIG[id(hf_config)] = (weakref.ref(hf_config), counts)
        weakref.finalize(hf_config, _BY_CONFIG.pop, id(hf_config), None)
    return counts.count(int(height), int(width), int(full))
