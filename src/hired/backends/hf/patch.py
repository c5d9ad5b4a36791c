"""The reversible transformers patch: ``forward`` and ``generate`` feed the language model only
the kept image tokens.

One class serves every family: the family says how to reach the vision layers, how to get each
image's packed features and how an image is laid out; the per-image plan is
:func:`hired.core.plan.plan_image`. The prompt is shortened to the kept placeholder counts and
the kept features go in as precomputed image features (``mm_encoder_outputs``), so the model's
own merge of text and image embeddings, its attention kernels and its cache are untouched.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from hired.backends.hf.hooks import record_cls_attention
from hired.backends.hf.prompt import shrink_prompt
from hired.config import HiREDConfig
from hired.core.layout import ImageLayout
from hired.core.plan import keep_image_tokens, merge_partitions, select
from hired.core.report import HiREDReport, ImageReport
from hired.core.view import Selection
from hired.errors import InputError
from hired.families import family_for_model
from hired.policies.registry import NEEDS_KEYS, get_policy, is_count_known

# [B, L] inputs that must shrink together with input_ids.
PER_TOKEN_INPUTS = ("labels", "token_type_ids", "mm_token_type_ids")
ENCODER_OPTIONS = ("vision_feature_layer", "vision_feature_select_strategy", "batch_num_images")


@dataclass
class EncodedBatch:
    """A batch through the vision encoder: per image its size, layout, packed features (layout
    order, merges already applied) and the policy's selection."""

    sizes: list[tuple[int, int]]
    layouts: list[ImageLayout]
    packed: list[Tensor]
    selections: list[Selection]


class HFPatch:
    """HiRED on one transformers model: validated on construction, before the model is touched."""

    def __init__(self, model: nn.Module, config: HiREDConfig):
        self.model = model
        self.config = config
        self.family = family_for_model(model)
        self.policy = get_policy(config.method)
        self.family.check_model(model)
        self.layers = self.family.vision_layers(model)
        self.num_heads = self.family.num_heads(model.config)
        self.requests = self.family.score_requests(model.config, config)
        self.init_layer, self.final_layer = self.requests["init"].layer, self.requests["final"].layer
        self.score = self.requests["final"].kind  # "cls" or "received"
        self.merges = config.method in NEEDS_KEYS
        self.count_known = is_count_known(config)

    # -- one batch of images -------------------------------------------------------------------
    def scoring_hooks(self):
        """The score hooks (a context manager yielding the recorder) on the layers this config reads."""
        modules = {i: self.family.qk_modules(self.layers[i]) for i in {self.init_layer, self.final_layer}}
        keep_keys = [self.final_layer] if self.merges else []
        return record_cls_attention(modules, self.requests, keep_keys, self.family.has_cls(self.model.config))

    def run_encoder(self, pixel_values: Tensor, image_sizes: Tensor | None, **kwargs: Any) -> EncodedBatch:
        """The model's own image encoding (ViT + projector + packing) with the scoring hooks on.
        Policies select as soon as the scores exist; merging policies merge the vision features
        before the projector (as their reference code does), through a hook on its input."""
        sizes = self.family.image_sizes(pixel_values, image_sizes)
        layouts = self.family.layouts(self.model.config, sizes, **kwargs)
        selections: list[Selection] = []

        def select_all(recorder: Any) -> None:
            # per image, in HiRED's partition order and over the language model's tokens (the layout)
            counts = [layout.partitions for layout in layouts]
            final, init = ([lay.partition_scores(s) for lay, s in zip(layouts, scores.cpu().split(counts))]
                           for scores in (recorder.scores["final"], recorder.scores["init"]))
            keys = ([lay.partition_keys(k) for lay, k in zip(layouts, recorder.keys[self.final_layer].split(counts))]
                    if self.merges else [None] * len(counts))
            heads = 1 if self.requests["final"].heads == 1 else self.num_heads
            selections.extend(
                select(layout, final[i], init[i], self.policy, self.config, keys[i], heads)
                for i, layout in enumerate(layouts)
            )

        def merge_before_projector(_module: nn.Module, args: tuple) -> tuple:
            select_all(recorder)
            features = args[0]  # [crops, N, D_vision], crops in the model's order
            rows = list(features.split([layout.partitions for layout in layouts]))
            merged = [merge_partitions(r, sel, lay) for r, sel, lay in zip(rows, selections, layouts)]
            return (torch.cat(merged), *args[1:])

        with self.scoring_hooks() as recorder:
            handle = (
                self.family.projector(self.model).register_forward_pre_hook(merge_before_projector)
                if self.merges else None
            )
            try:
                packed = self.family.image_features(self.model, pixel_values, image_sizes, **kwargs)
            finally:
                if handle is not None:
                    handle.remove()
        if not self.merges:
            select_all(recorder)
        return EncodedBatch(sizes, layouts, packed, selections)

    def plan_images(self, batch: EncodedBatch) -> tuple[list[Tensor], list[ImageReport]]:
        """Each image's plan: kept features (newlines included) and its report."""
        features, reports = [], []
        for size, layout, packed, selection in zip(batch.sizes, batch.layouts, batch.packed, batch.selections):
            kept, report = keep_image_tokens(layout, packed, selection, self.config, size, self.count_known)
            features.append(kept)
            reports.append(report)
        return features, reports

    def encode_images(
        self, pixel_values: Tensor, image_sizes: Tensor | None, **kwargs: Any
    ) -> tuple[list[Tensor], list[ImageReport]]:
        """Kept image features (one [k_i, D] tensor per image) and one report per image."""
        return self.plan_images(self.run_encoder(pixel_values, image_sizes, **kwargs))

    # -- the patched entry points ----------------------------------------------------------------
    def prepare(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Encode images, keep the budget, shorten the prompt: kwargs for the original call."""
        if kwargs.get("input_ids") is None:
            raise InputError("hired needs input_ids to find the image placeholders; pass input_ids, not inputs_embeds")
        if kwargs.get("position_ids") is not None:
            raise InputError("position_ids cannot be combined with token dropping; leave them out")
        kwargs = dict(kwargs)
        pixel_values = kwargs.pop("pixel_values")
        if not isinstance(pixel_values, Tensor):
            raise InputError(f"pixel_values must be a tensor, got {type(pixel_values).__name__}")
        if pixel_values.is_floating_point() and not bool(torch.isfinite(pixel_values).all()):
            raise InputError("pixel_values hold NaN or infinite values; no token can be ranked by them")
        image_sizes = kwargs.pop("image_sizes", None)
        encoder_kwargs = {key: kwargs.pop(key) for key in ENCODER_OPTIONS if kwargs.get(key) is not None}
        features, reports = self.encode_images(pixel_values, image_sizes, **encoder_kwargs)
        input_ids = kwargs.pop("input_ids")
        extra = {key: kwargs.pop(key) for key in PER_TOKEN_INPUTS if kwargs.get(key) is not None}
        image_token_id = self.model.config.image_token_id
        shrunk = shrink_prompt(
            input_ids,
            kwargs.pop("attention_mask", None),
            image_token_id,
            [r.llm_tokens_full for r in reports],
            [r.llm_tokens for r in reports],
            self.pad_token_id(),
            extra,
        )
        image_tokens = int((shrunk["input_ids"] == image_token_id).sum())
        self.model.hired_report = HiREDReport(self.config.method, self.config.to_dict(), reports, image_tokens)
        kwargs.update({k: v for k, v in shrunk.items() if v is not None})
        pooled = self.family.pooler_output(features)
        kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=pooled)}
        return kwargs

    def pad_token_id(self) -> int:
        for source in (self.model.generation_config, self.model.config, self.model.config.text_config):
            pad = getattr(source, "pad_token_id", None)
            if isinstance(pad, int):
                return pad
        return 0

    def wrap_forward(self, original: Callable) -> Callable:
        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any):
            kwargs = named_arguments(original, args, kwargs)
            if kwargs.get("pixel_values") is None:
                return original(**kwargs)
            return original(**self.prepare(kwargs))

        return forward

    def wrap_generate(self, original: Callable) -> Callable:
        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any):
            kwargs = named_arguments(original, args, kwargs)
            if kwargs.get("inputs") is not None:
                kwargs["input_ids"] = kwargs.pop("inputs")
            if kwargs.get("pixel_values") is None:
                self.model.hired_report = None
                return original(**kwargs)
            with torch.no_grad():
                prepared = self.prepare(kwargs)
            short_len = prepared["input_ids"].shape[1]
            out = original(**prepared)
            return restore_prompt(out, kwargs["input_ids"], short_len)

        return generate


def named_arguments(original: Callable, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name, positional ones mapped by ``original``'s own signature (as the
    unpatched model takes ``model(input_ids, pixel_values, image_sizes)``); InputError where the
    unpatched model would refuse them too."""
    if not args:
        return dict(kwargs)
    signature = inspect.signature(original)
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError as error:
        raise InputError(f"{getattr(original, '__name__', 'the call')}: {error}") from None
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise InputError(f"{getattr(original, '__name__', 'the call')} got {len(value)} extra positional "
                                 f"arguments that hired cannot name; pass them by keyword")
        else:
            named[name] = value
    return named


def restore_prompt(output: Any, prompt: Tensor, short_len: int) -> Any:
    """Put the caller's own prompt back in front of the generated tokens, so that
    ``out[:, inputs.input_ids.shape[1]:]`` is the answer as with the unmodified model."""
    sequences = output if isinstance(output, Tensor) else getattr(output, "sequences", None)
    if sequences is None:
        return output
    repeats = sequences.shape[0] // prompt.shape[0]
    restored = torch.cat([prompt.repeat_interleave(repeats, 0).to(sequences.device), sequences[:, short_len:]], 1)
    if isinstance(output, Tensor):
        return restored
    output.sequences = restored
    return output
