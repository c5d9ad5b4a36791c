"""Shared machinery of the model adapters: layer lookup, scoring, and the patched
``forward`` / ``generate`` that feed the language model only the kept image tokens."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from hired.config import HiREDConfig
from hired.errors import ConfigError, HiREDError, UnsupportedModelError
from hired.methods import NEEDS_KEYS, ImageView, Selection, get_policy
from hired.report import HiREDReport, ImageReport
from hired.scoring import record_cls_attention
from hired.sequence import shrink_prompt

# [B, L] inputs that must shrink together with input_ids.
PER_TOKEN_INPUTS = ("labels", "token_type_ids", "mm_token_type_ids")


class Adapter:
    """Base of the per-family adapters. Subclasses implement :meth:`encode_images`."""

    model_classes: tuple[type, ...] = ()

    def __init__(self, model: nn.Module, config: HiREDConfig):
        self.model = model
        self.config = config
        self.policy = get_policy(config.method)
        self.base = model.model
        tower = self.base.vision_tower
        vision_model = getattr(tower, "vision_model", tower)  # transformers 4.x nests it
        embeddings = getattr(vision_model, "embeddings", None)
        layers = getattr(getattr(vision_model, "encoder", None), "layers", None)
        if layers is None or not hasattr(embeddings, "class_embedding"):
            raise UnsupportedModelError(
                f"vision tower {type(tower).__name__} has no CLS token; hired needs a CLIP-style ViT"
            )
        attn = layers[0].self_attn
        if not (hasattr(attn, "q_proj") and hasattr(attn, "k_proj")):
            raise UnsupportedModelError(f"vision attention {type(attn).__name__} has no q_proj/k_proj to hook")
        self.layers = layers
        self.num_heads = model.config.vision_config.num_attention_heads
        strategy = model.config.vision_feature_select_strategy
        if strategy != "default":
            raise UnsupportedModelError(
                f"vision_feature_select_strategy={strategy!r} is not supported; hired needs 'default' (CLS dropped)"
            )
        feature_layer = model.config.vision_feature_layer
        self.feature_layer = feature_layer[-1] if isinstance(feature_layer, (list, tuple)) else feature_layer
        self.init_layer = self.layer_index(config.init_layer, "init_layer")
        if config.final_layer is None:
            self.final_layer = self.hidden_state_layer(self.feature_layer)
        else:
            self.final_layer = self.layer_index(config.final_layer, "final_layer")

    # -- layers ---------------------------------------------------------------------------
    def layer_index(self, index: int, name: str) -> int:
        count = len(self.layers)
        if not -count <= index < count:
            raise ConfigError(f"{name}={index} is out of range for a {count}-layer vision tower")
        return index % count

    def hidden_state_layer(self, hidden_index: int) -> int:
        """Encoder layer whose output is ``hidden_states[hidden_index]``."""
        count = len(self.layers)
        layer = count + hidden_index if hidden_index < 0 else hidden_index - 1
        if not 0 <= layer < count:
            raise ConfigError(f"vision_feature_layer={hidden_index} has no attention layer to score with")
        return layer

    def scoring_hooks(self):
        layers = {self.init_layer, self.final_layer}
        keep_keys = [self.final_layer] if self.config.method in NEEDS_KEYS else []
        return record_cls_attention({i: self.layers[i].self_attn for i in layers}, self.num_heads, keep_keys)

    def select(self, view: ImageView) -> Selection:
        return self.policy(view, self.config)

    # -- what subclasses provide ----------------------------------------------------------
    def encode_images(
        self, pixel_values: Tensor, image_sizes: Tensor | None, **kwargs: Any
    ) -> tuple[list[Tensor], list[ImageReport]]:
        """Kept image features (one [k_i, D] tensor per image) and one report per image."""
        raise NotImplementedError

    # -- the patched entry points -----------------------------------------------------------
    def prepare(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Encode images, keep the budget, shorten the prompt: kwargs for the original call."""
        if kwargs.get("input_ids") is None:
            raise HiREDError("hired needs input_ids to find the image placeholders; pass input_ids, not inputs_embeds")
        if kwargs.get("position_ids") is not None:
            raise HiREDError("position_ids cannot be combined with token dropping; leave them out")
        kwargs = dict(kwargs)
        pixel_values = kwargs.pop("pixel_values")
        image_sizes = kwargs.pop("image_sizes", None)
        encoder_kwargs = {
            key: kwargs.pop(key)
            for key in ("vision_feature_layer", "vision_feature_select_strategy")
            if kwargs.get(key) is not None
        }
        features, reports = self.encode_images(pixel_values, image_sizes, **encoder_kwargs)
        input_ids = kwargs.pop("input_ids")
        extra = {key: kwargs.pop(key) for key in PER_TOKEN_INPUTS if kwargs.get(key) is not None}
        shrunk = shrink_prompt(
            input_ids,
            kwargs.pop("attention_mask", None),
            self.model.config.image_token_id,
            [r.llm_tokens_full for r in reports],
            [r.llm_tokens for r in reports],
            self.pad_token_id(),
            extra,
        )
        image_tokens = int((shrunk["input_ids"] == self.model.config.image_token_id).sum())
        self.model.hired_report = HiREDReport(self.config.method, self.config.to_dict(), reports, image_tokens)
        kwargs.update({k: v for k, v in shrunk.items() if v is not None})
        kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=features)}
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
            if args:
                kwargs["input_ids"], args = args[0], args[1:]
            if kwargs.get("pixel_values") is None:
                return original(*args, **kwargs)
            return original(*args, **self.prepare(kwargs))

        return forward

    def wrap_generate(self, original: Callable) -> Callable:
        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any):
            if args:
                kwargs["input_ids"], args = args[0], args[1:]
            if kwargs.get("inputs") is not None:
                kwargs["input_ids"] = kwargs.pop("inputs")
            if kwargs.get("pixel_values") is None:
                self.model.hired_report = None
                return original(*args, **kwargs)
            prompt = kwargs["input_ids"]
            with torch.no_grad():
                prepared = self.prepare(kwargs)
            short_len = prepared["input_ids"].shape[1]
            out = original(*args, **prepared)
            return restore_prompt(out, prompt, short_len)

        return generate


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
