"""Where one image's partition tokens land in the language model's sequence (pure tensors).

A family computes an :class:`ImageLayout` from the model config and the image size alone; the
plan uses it to turn a keep mask into the packed sequence the language model receives, with the
model's own unpadding and image-newline tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

NEWLINE = -1  # a position that holds an image-newline token, not a partition token
NewlinePolicy = Literal["kept_rows", "all", "none"]


@dataclass(frozen=True)
class ImageLayout:
    """One image of a given size, as a model family packs it.

    positions: [L] the language model's image tokens in order; each is a flat partition-token
        index ``p * N + n`` (partitions in HiRED's order: full view first, sub-images row-major)
        or :data:`NEWLINE`. Tokens that unpadding removes appear nowhere.
    partitions, tokens: P crops of N tokens each (the ViT's patch tokens, CLS excluded).
    grid: (rows, cols) of sub-images; (1, 1) for a single-view image.
    """

    positions: Tensor
    partitions: int
    tokens: int
    grid: tuple[int, int]

    @property
    def total(self) -> int:
        """All partition tokens, P x N."""
        return self.partitions * self.tokens

    @property
    def length(self) -> int:
        """Image tokens the unmodified model gives the language model (newlines included)."""
        return int(self.positions.numel())

    @property
    def is_newline(self) -> Tensor:
        return self.positions == NEWLINE

    @property
    def newlines(self) -> int:
        return int(self.is_newline.sum())

    @property
    def valid(self) -> Tensor:
        """[P, N] tokens that reach the unmodified language model (survive unpadding)."""
        valid = torch.zeros(self.total, dtype=torch.bool)
        valid[self.positions[~self.is_newline]] = True
        return valid.view(self.partitions, self.tokens)

    def sequence_mask(self, keep: Tensor, newlines: NewlinePolicy) -> Tensor:
        """[L] mask over the packed sequence: kept tokens plus the newlines the policy asks for
        ("all": every row's, as the unmodified model; "none"; "kept_rows": the newline of each
        sub-image row that keeps at least one token, and of each row that unpadding left without
        tokens, which the unmodified model also has)."""
        is_newline = self.is_newline
        kept_token = keep.flatten()[self.positions.clamp_min(0)] & ~is_newline
        if newlines == "none" or not bool(is_newline.any()):
            return kept_token
        if newlines == "all":
            return kept_token | is_newline
        sub_token = ~is_newline & (self.positions >= self.tokens) if self.partitions > 1 else ~is_newline
        segment = torch.cumsum(is_newline.long(), 0) - is_newline.long()  # a newline closes its row
        rows = int(segment[-1]) + 1

        def per_row(mask: Tensor) -> Tensor:
            return torch.zeros(rows, dtype=torch.long).index_add_(0, segment, mask.long()) > 0

        # A row that unpadding emptied (extreme aspect ratios) keeps its newline, as the unmodified model.
        row_kept = per_row(kept_token & sub_token) | ~per_row(sub_token)
        return kept_token | (is_newline & row_kept[segment])


def single_view_layout(tokens: int) -> ImageLayout:
    """One crop, every token in raster order, no newlines (LLaVA-1.5)."""
    return ImageLayout(torch.arange(tokens), 1, tokens, (1, 1))
