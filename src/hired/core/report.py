"""What a HiRED-patched call kept: per image and in total."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ImageReport:
    """One image's partitions, budgets and keep mask.

    keep_mask is [P, N] (full view first, sub-images row-major); valid marks tokens that
    survive the model's unpadding. ``kept`` counts visual tokens the language model receives;
    ``llm_tokens`` adds the image-newline tokens; ``llm_tokens_full`` is what the unmodified
    model would have fed it.
    """

    image_size: tuple[int, int] | None  # the picture's (height, width); None where the backend cannot know it
    grid: tuple[int, int]
    budget: int
    partition_budgets: list[int]
    keep_mask: Tensor
    valid: Tensor
    newline_tokens: int
    llm_tokens_full: int
    budget_total: int | None = None  # the layout's denominator where it is not P x N


    @property
    def partitions(self) -> int:
        return self.keep_mask.shape[0]

    @property
    def tokens_per_partition(self) -> int:
        return self.keep_mask.shape[1]

    @property
    def total(self) -> int:
        """The denominator of a ratio budget: all partition tokens, P x N (or the layout's
        ``budget_total``, for LLaVA-OneVision's downsampled maps)."""
        return self.budget_total if self.budget_total is not None else self.keep_mask.numel()

    @property
    def valid_tokens(self) -> int:
        return int(self.valid.sum())

    @property
    def kept_per_partition(self) -> list[int]:
        return (self.keep_mask & self.valid).sum(1).tolist()

    @property
    def kept(self) -> int:
        return int((self.keep_mask & self.valid).sum())

    @property
    def llm_tokens(self) -> int:
        return self.kept + self.newline_tokens

    def to_dict(self, masks: bool = False) -> dict:
        out = {
            "image_size": list(self.image_size) if self.image_size is not None else None,
            "grid": list(self.grid),
            "partitions": self.partitions,
            "tokens_per_partition": self.tokens_per_partition,
            "total": self.total,
            "valid_tokens": self.valid_tokens,
            "budget": self.budget,
            "partition_budgets": self.partition_budgets,
            "kept_per_partition": self.kept_per_partition,
            "kept": self.kept,
            "newline_tokens": self.newline_tokens,
            "llm_tokens": self.llm_tokens,
            "llm_tokens_full": self.llm_tokens_full,
        }
        if masks:
            out["keep_mask"] = self.keep_mask.int().tolist()
        return out


@dataclass
class HiREDReport:
    """The last patched call: one ImageReport per image, in batch order."""

    method: str
    config: dict
    images: list[ImageReport] = field(default_factory=list)
    llm_image_tokens: int = 0  # image placeholders the language model actually received

    @property
    def kept(self) -> int:
        return sum(r.kept for r in self.images)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.images)

    @property
    def valid_tokens(self) -> int:
        return sum(r.valid_tokens for r in self.images)

    @property
    def keep_masks(self) -> list[Tensor]:
        return [r.keep_mask for r in self.images]

    def summary(self) -> str:
        parts = [f"{r.kept}/{r.total}" for r in self.images]
        return f"{self.method}: kept {self.kept}/{self.total} visual tokens ({', '.join(parts)} per image)"

    def to_dict(self, masks: bool = False) -> dict:
        return {
            "method": self.method,
            "config": self.config,
            "kept": self.kept,
            "total": self.total,
            "llm_image_tokens": self.llm_image_tokens,
            "images": [r.to_dict(masks) for r in self.images],
        }
