"""`hired bench` settings and the parsing of its command-line lists."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hired.checks import at_least
from hired.errors import OptionError
from hired.experiments import FULL, Arm, make_arms

PROMPT = "Describe the picture."


@dataclass
class BenchSettings:
    model: str = "tiny-llava-next"
    budgets: list[float | int] = field(default_factory=lambda: [1.0, 0.4, 0.2, 0.1])
    methods: list[str] = field(default_factory=lambda: [FULL, "hired"])
    image_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(672, 672)])  # (width, height)
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    new_tokens: int = 32
    runs: int = 5
    warmup: int = 1
    device: str = "auto"
    dtype: str = "auto"
    memory_cap_gb: float | None = None
    llm_layers: int | None = None
    vit_layers: int | None = None
    alpha: float = 0.5
    seed: int = 0
    prompt: str = PROMPT
    overhead: bool = True  # time plain ViT vs ViT + scoring + selection

    def validate(self) -> list[Arm]:
        for name in ("new_tokens", "runs"):
            at_least(getattr(self, name), 1, f"--{name.replace('_', '-')}")
        at_least(self.warmup, 0, "--warmup")
        at_least(self.seed, 0, "--seed")
        if not self.batch_sizes or any(not 1 <= b <= MAX_COUNT for b in self.batch_sizes):
            raise OptionError(f"--batch-size values must be from 1 to {MAX_COUNT}; got {self.batch_sizes}")
        if not self.image_sizes or any(w < 1 or h < 1 for w, h in self.image_sizes):
            raise OptionError(f"--image sizes must be positive WxH; got {self.image_sizes}")
        if self.memory_cap_gb is not None and not (math.isfinite(self.memory_cap_gb) and self.memory_cap_gb > 0):
            raise OptionError(f"--memory-cap-gb must be a number of GiB > 0; got {self.memory_cap_gb}")
        if self.llm_layers is not None:
            at_least(self.llm_layers, 1, "--llm-layers")
        if self.vit_layers is not None:  # the features come from the second-to-last layer
            at_least(self.vit_layers, 2, "--vit-layers")
        if not self.budgets:
            raise OptionError("--budgets is empty")
        if not self.methods:
            raise OptionError("--methods is empty")
        return make_arms(self.methods, self.budgets, self.alpha, self.seed)  # ConfigError on bad ones


# -- parsing CLI lists -----------------------------------------------------------------------
def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


MAX_COUNT = 4096  # batch sizes and requests in flight: beyond it a run builds inputs for hours before failing


def parse_ints(text: str, option: str, maximum: int = MAX_COUNT) -> list[int]:
    try:
        values = [int(part) for part in split_list(text)]
    except ValueError:
        raise OptionError(f"{option} takes comma-separated integers like 1,4; got {text!r}") from None
    if not values or any(not 1 <= v <= maximum for v in values):
        raise OptionError(f"{option} values must be integers from 1 to {maximum}; got {text[:60]!r}")
    return values


def parse_size(text: str) -> tuple[int, int]:
    """'672x672' -> (width, height)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise OptionError(f"--image takes WxH sizes such as 672x672; got {text!r}") from None
    if width < 1 or height < 1 or width > 16384 or height > 16384:
        raise OptionError(f"--image size must be between 1x1 and 16384x16384; got {text!r}")
    return width, height
