"""LLaVA-1.5 and ShareGPT4V: one 336px crop, 576 tokens, no newlines (phase 2 only)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers import LlavaForConditionalGeneration

from hired.merging import apply_merge_weights
from hired.methods import ImageView
from hired.models.base import Adapter
from hired.report import ImageReport


class LlavaAdapter(Adapter):
    model_classes = (LlavaForConditionalGeneration,)

    def encode_images(self, pixel_values: Tensor, image_sizes: Tensor | None, **kwargs: Any):
        with self.scoring_hooks() as scores:
            out = self.base.get_image_features(pixel_values=pixel_values, return_dict=True, **kwargs)
        per_image = list(out.pooler_output)
        final = scores.scores[self.final_layer].cpu()
        init = scores.scores[self.init_layer].cpu()
        keys = scores.keys.get(self.final_layer)
        height, width = pixel_values.shape[-2:]
        features, reports = [], []
        for i, image_features in enumerate(per_image):
            n = image_features.shape[0]
            valid = torch.ones(1, n, dtype=torch.bool)
            budget = self.config.tokens_for(n)
            view = ImageView(final[i : i + 1], init[i : i + 1], (1, 1), valid, budget, None if keys is None else keys[i : i + 1])
            selection = self.select(view)
            keep = selection.keep & valid
            if selection.merge_weights is not None:
                image_features = apply_merge_weights(
                    image_features[None], keep.to(image_features.device), selection.merge_weights.to(image_features.device)
                )[0]
            features.append(image_features[keep[0].to(image_features.device)])
            reports.append(
                ImageReport(
                    image_size=(int(height), int(width)),
                    grid=(1, 1),
                    budget=budget,
                    partition_budgets=selection.budgets.tolist(),
                    keep_mask=selection.keep,
                    valid=valid,
                    newline_tokens=0,
                    llm_tokens_full=n,
                )
            )
        return features, reports
