"""Inputs of `hired bench`: noise pictures of a given size, processed for the model, and what the
unmodified model does with an image of that size."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from hired.backends.hf.table import family_for_model
from hired.bench.settings import PROMPT
from hired.loading import LoadedModel


# -- inputs ----------------------------------------------------------------------------------
def noise_images(width: int, height: int, count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def make_inputs(loaded: LoadedModel, width: int, height: int, batch: int, prompt: str = PROMPT,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """``batch`` different noise pictures of one size, each with the formatted prompt."""
    images = noise_images(width, height, batch, seed)
    return loaded.inputs(images, [loaded.format_prompt(prompt)] * batch, padding=True)


def image_geometry(model: torch.nn.Module, height: int, width: int) -> dict[str, int]:
    """Crops the ViT runs on, the tokens a ratio budget is a share of (partition tokens, or the
    layout's ``budget_total``: LLaVA-OneVision's downsampled map, Qwen's picture without its
    cells' padding), tokens the full model keeps (valid after unpadding) and the image tokens it
    gives the language model (newlines included)."""
    family, _ = family_for_model(model)
    layout = family.layout(model.config, (height, width))
    return {"crops": layout.partitions, "total": layout.denominator, "valid": int(layout.valid.sum()),
            "llm_tokens": layout.length}
