"""What a policy sees of one image and what it answers (pure tensors, no model knowledge)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


def token_shape(tokens: int, shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """(rows, cols) of a partition's ``tokens`` in raster order: ``shape`` where given, else a
    square where ``tokens`` is one, else one row."""
    if shape is not None:
        return shape
    side = int(round(tokens**0.5))
    return (side, side) if side * side == tokens else (1, tokens)

@dataclass
class ImageView:
    """One image's scores as a policy sees them: P partitions of N tokens, in the order HiRED
    reasons about them (the full view first, then the sub-images row-major), whatever order the
    model itself uses."""

    final_scores: Tensor  # [P, N] final-layer CLS attention, summed over heads
    init_scores: Tensor  # [P, N] early-layer CLS attention, summed over heads
    grid: tuple[int, int]  # (rows, cols) of sub-images; (1, 1) with P == 1 for single-view models
    valid: Tensor  # [P, N] tokens that survive the model's unpadding
    budget: int  # tokens to keep for this image
    keys: Tensor | None = None  # [P, N, D] final-layer keys, for policies that merge
    key_heads: int = 1  # attention heads the keys' width D splits into (D = key_heads x head_dim)
    full_view: bool = True  # partition 0 views the whole picture (else: P regions of one picture)
    shape: tuple[int, int] | None = None  # (rows, cols) of each partition's tokens; None: a square

    @property
    def token_shape(self) -> tuple[int, int]:
        """(rows, cols) of each partition's N tokens in raster order."""
        return token_shape(self.tokens, self.shape)

    @property
    def partitions(self) -> int:
        return self.final_scores.shape[0]

    @property
    def tokens(self) -> int:
        """Tokens per partition, N."""
        return self.final_scores.shape[1]

    @property
    def total(self) -> int:
        """All partition tokens, P x N (the denominator of a ratio budget)."""
        return self.final_scores.numel()


@dataclass
class Selection:
    """A policy's answer: keep mask [P, N] and the per-partition budgets it used."""

    keep: Tensor
    budgets: Tensor
    merge_weights: Tensor | None = None  # [P, N, N]: row i mixes tokens into kept token i
