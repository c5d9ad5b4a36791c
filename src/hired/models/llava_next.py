"""LLaVA-NeXT (LLaVA-1.6): full view + a grid of sub-images, unpadding, image newlines."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from transformers import LlavaNextForConditionalGeneration
from transformers.models.llava_next.modeling_llava_next import (
    get_anyres_image_grid_shape,
    image_size_to_num_patches,
)

from hired.errors import ImageTokenMismatchError
from hired.merging import apply_merge_weights
from hired.methods import ImageView
from hired.models.base import Adapter
from hired.report import ImageReport

NEWLINE = -1


class LlavaNextAdapter(Adapter):
    model_classes = (LlavaNextForConditionalGeneration,)

    def __init__(self, model, config):
        super().__init__(model, config)
        self._layout = lru_cache(maxsize=256)(self._compute_layout)

    @property
    def tokens_per_crop(self) -> int:
        vision = self.model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    def geometry(self, image_size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        """(partitions, (rows, cols)) of an image of size (height, width)."""
        cfg = self.model.config
        partitions = image_size_to_num_patches(list(image_size), cfg.image_grid_pinpoints, cfg.vision_config.image_size)
        rows, cols = get_anyres_image_grid_shape(list(image_size), cfg.image_grid_pinpoints, cfg.vision_config.image_size)
        return partitions, (rows, cols)

    def _compute_layout(self, image_size: tuple[int, int], partitions: int) -> Tensor:
        """Where each token lands in the model's packed sequence: a flat partition-token index
        (p * N + n) or NEWLINE, in the model's own order. Computed by the model's own
        ``pack_image_features`` on index features, so unpadding and newlines match exactly."""
        n = self.tokens_per_crop
        index = torch.arange(partitions * n, dtype=torch.float64).view(partitions, n, 1)
        packed, _ = self.base.pack_image_features(
            [index],
            torch.tensor([image_size]),
            vision_feature_select_strategy="default",
            image_newline=torch.tensor([float(NEWLINE)], dtype=torch.float64),
        )
        return packed[0].view(-1).round().long()

    def packed_keep(self, layout: Tensor, keep: Tensor, partitions: int) -> Tensor:
        """Mask over the packed sequence: kept tokens plus the newlines the policy asks for."""
        n = keep.shape[1]
        is_newline = layout == NEWLINE
        token = layout.clamp_min(0)
        kept_token = keep.flatten()[token] & ~is_newline
        policy = self.config.newline_policy
        if policy == "none":
            return kept_token
        if policy == "all":
            return kept_token | is_newline
        row_token = kept_token & (layout >= n) if partitions > 1 else kept_token
        segment = torch.cumsum(is_newline.long(), 0) - is_newline.long()  # a newline closes its row
        row_kept = torch.zeros(int(segment[-1]) + 1, dtype=torch.long).index_add_(0, segment, row_token.long()) > 0
        return kept_token | (is_newline & row_kept[segment])

    def merged(self, packed: Tensor, layout: Tensor, keep: Tensor, weights: Tensor) -> Tensor:
        """Packed features with each kept token replaced by its merge of its partition's tokens."""
        partitions, n = keep.shape
        is_token = (layout != NEWLINE).to(packed.device)
        token_index = layout[layout != NEWLINE].to(packed.device)
        grid = packed.new_zeros(partitions * n, packed.shape[-1])
        grid[token_index] = packed[is_token]
        grid = apply_merge_weights(grid.view(partitions, n, -1), keep.to(packed.device), weights.to(packed.device))
        out = packed.clone()
        out[is_token] = grid.view(partitions * n, -1)[token_index]
        return out

    def encode_images(self, pixel_values: Tensor, image_sizes: Tensor | None, **kwargs: Any):
        if image_sizes is None:
            raise ImageTokenMismatchError("LLaVA-NeXT needs image_sizes with pixel_values (the processor returns both)")
        with self.scoring_hooks() as scores:
            out = self.base.get_image_features(
                pixel_values=pixel_values, image_sizes=image_sizes, return_dict=True, **kwargs
            )
        packed = out.pooler_output
        sizes = [tuple(int(v) for v in size) for size in image_sizes.tolist()]
        geometry = [self.geometry(size) for size in sizes]
        counts = [p for p, _ in geometry]
        final = scores.scores[self.final_layer].cpu().split(counts)
        init = scores.scores[self.init_layer].cpu().split(counts)
        keys = scores.keys.get(self.final_layer)
        keys = keys.split(counts) if keys is not None else [None] * len(counts)
        n = self.tokens_per_crop
        features, reports = [], []
        for i, (size, (partitions, grid)) in enumerate(zip(sizes, geometry)):
            layout = self._layout(size, partitions)
            valid = torch.zeros(partitions * n, dtype=torch.bool)
            valid[layout[layout != NEWLINE]] = True
            valid = valid.view(partitions, n)
            budget = self.config.tokens_for(partitions * n)
            view = ImageView(final[i], init[i], grid, valid, budget, keys[i])
            selection = self.select(view)
            keep = selection.keep & valid
            in_sequence = self.packed_keep(layout, keep, partitions)
            image_features = packed[i]
            if selection.merge_weights is not None:
                image_features = self.merged(image_features, layout, keep, selection.merge_weights)
            features.append(image_features[in_sequence.to(image_features.device)])
            reports.append(
                ImageReport(
                    image_size=size,
                    grid=grid,
                    budget=budget,
                    partition_budgets=selection.budgets.tolist(),
                    keep_mask=selection.keep,
                    valid=valid,
                    newline_tokens=int((in_sequence & (layout == NEWLINE)).sum()),
                    llm_tokens_full=layout.numel(),
                )
            )
        return features, reports
