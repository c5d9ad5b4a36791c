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

from hired.core.view import token_shape

NEWLINE = -1  # a position that holds an image-newline token, not a partition token
NewlinePolicy = Literal["kept_rows", "all", "none"]


@dataclass(frozen=True)
class ImageLayout:
    """One image of a given size, as a model family packs it.

    positions: [L] the language model's image tokens in order; each is a flat partition-token
        index ``p * N + n`` (partitions in HiRED's order: full view first, sub-images row-major)
        or :data:`NEWLINE`. Tokens that unpadding removes appear nowhere.
    partitions, tokens: P crops of N tokens each (the language model's tokens of a crop: the ViT's
        patch tokens, CLS excluded, after any pooling such as InternVL's pixel shuffle).
    grid: (rows, cols) of sub-images; (1, 1) for a single-view image.
    crop_order: for each partition in HiRED's order, the index of its crop in the model's own
        order (the rows of ``pixel_values``); ``None`` when both orders agree (LLaVA-NeXT puts
        the full view first, InternVL last).
    sources, weights: [P, N, K] where a partition token is not one ViT token: the flat indices
        ``crop * T + t`` (crops in the model's order, T ViT tokens per crop, CLS excluded, in the
        order the scored layers hold them: Qwen2.5-VL's window order) of the ViT tokens it is made
        of, and their weights (``None``: 1 each). InternVL's pixel shuffle:
        the 4 patches of a token, summed; LLaVA-OneVision's bilinear downsampling: up to 4 source
        tokens with their interpolation weights (weight 0 pads). ``None``: token n of partition p
        is ViT token n of crop ``crop_order[p]``.
    budget_total: the denominator of a ratio budget where it is not P x N: LLaVA-OneVision's
        downsampled map gives the language model fewer tokens than its crops hold, so a share is
        of the base image's tokens plus the downsampled map's.
    full_view: partition 0 is a downsampled view of the whole picture and partitions 1.. tile
        it as a ``grid`` (HiRED's phase 1 reads the full view's content over each tile). False:
        the partitions are ``grid`` regions of one native-resolution picture (Qwen), each read
        for its own content.
    shape: (rows, cols) of each partition's N tokens in raster order (default: a square).
    crops: the encoder's crops of this image (rows of its per-crop outputs; default P).
    token_index: [P, N] each partition token's index among the image's encoder outputs at the
        language model's granularity (crop-major, the model's crop order; what a projector
        takes), -1 where no token is; default ``crop_order[p] * N + n``. Merging policies merge
        there.
    """

    positions: Tensor
    partitions: int
    tokens: int
    grid: tuple[int, int]
    crop_order: tuple[int, ...] | None = None
    sources: Tensor | None = None
    weights: Tensor | None = None
    budget_total: int | None = None
    full_view: bool = True
    shape: tuple[int, int] | None = None
    crops: int | None = None
    token_index: Tensor | None = None

    @property
    def token_shape(self) -> tuple[int, int]:
        """(rows, cols) of each partition's tokens."""
        return token_shape(self.tokens, self.shape)

    @property
    def encoder_crops(self) -> int:
        return self.crops if self.crops is not None else self.partitions

    @property
    def token_rows(self) -> Tensor:
        """[P, N] :attr:`token_index`, or its default from the crop order."""
        if self.token_index is not None:
            return self.token_index
        order = torch.tensor(self.crop_order) if self.crop_order is not None else torch.arange(self.partitions)
        return order[:, None] * self.tokens + torch.arange(self.tokens)[None]

    def partition_scores(self, scores: Tensor) -> Tensor:
        """[P, N] scores in HiRED's partition order from the ViT's per-crop token scores ([C, T],
        the model's crop order): reordered, and pooled as the tokens are (``sources``, ``weights``)."""
        if self.sources is None:
            return scores[list(self.crop_order)] if self.crop_order is not None else scores
        pooled = scores.flatten()[self.sources.to(scores.device)]
        if self.weights is not None:
            pooled = pooled * self.weights.to(pooled)
        return pooled.sum(-1)

    def partition_keys(self, keys: Tensor) -> Tensor:
        """[P, N, d] keys in HiRED's partition order (a token's keys: the weighted mean of its sources')."""
        if self.sources is None:
            return keys[list(self.crop_order)] if self.crop_order is not None else keys
        pooled = keys.flatten(0, 1)[self.sources.to(keys.device)]  # [P, N, K, d]
        weights = torch.ones(self.sources.shape) if self.weights is None else self.weights
        weights = weights.to(pooled) / weights.to(pooled).sum(-1, keepdim=True).clamp_min(1e-12)
        return (pooled * weights[..., None]).sum(-2)

    @property
    def total(self) -> int:
        """All partition tokens, P x N."""
        return self.partitions * self.tokens

    @property
    def denominator(self) -> int:
        """The tokens a ratio budget is a share of (P x N unless ``budget_total`` says otherwise)."""
        return self.budget_total if self.budget_total is not None else self.total

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
