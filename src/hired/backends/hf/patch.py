"""The reversible transformers patch: ``forward`` and ``generate`` feed the language model only
the kept image tokens.

One class serves every family: the family's row (:mod:`hired.backends.hf.table`) says where the
vision layers, their q/K and the projector live and how the model encodes images; the recipe
(:class:`hired.recipe.Recipe`) joins the family's geometry with the policy; the per-batch step
is :class:`hired.core.batch.BatchStep`, the same as under every backend. The prompt is shortened
to the kept placeholder counts and the kept features go in as precomputed image features
(``mm_encoder_outputs``), so the model's own merge of text and image embeddings, its attention
kernels and its cache are untouched.

The transformers contract, argument by argument (a patched model either behaves as the
unmodified one or refuses with an :class:`~hired.errors.InputError` naming why):

- a config that keeps every token (budget 1.0 with a fixed-budget method and the model's
  newlines) changes nothing: the call runs as given, with the scoring hooks on for the report;
- ``max_length`` / ``min_length`` of ``generate`` count from the caller's prompt, as for the
  unmodified model (they are moved by the tokens dropped);
- ``inputs_embeds`` beside ``input_ids`` are shortened with them; without ``input_ids`` the image
  placeholders cannot be found (refused below 1.0); ``position_ids`` number the whole prompt
  (refused below 1.0); where the row's ``rope`` says positions come from the image grid (mRoPE,
  Qwen-VL), the patch computes the unmodified prompt's positions with the model's own code, keeps
  those of the kept tokens and the text, and sets the rope deltas so decoding continues after
  the full prompt's positions;
- a cache (``past_key_values`` / ``cache``) a patched ``generate`` returned continues as with the
  unmodified model: the caller's prompt in ``input_ids`` is mapped back to the shortened one the
  cache holds (a prompt that does not start with it is refused);
- ``copy.deepcopy`` of a patched model is a patched copy running its own weights; calls from
  several threads are serialized (the hooks and the report are per model).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationMixin

from hired.backends.hf.hooks import recording
from hired.backends.hf.prompt import kept_first, shrink_prompt
from hired.backends.hf.table import ImageCall, family_for_model
from hired.checks import check_context
from hired.config import HiREDConfig
from hired.core.batch import BatchStep
from hired.core.recorder import ScoreRecorder
from hired.core.report import HiREDReport, ImageReport
from hired.errors import HiREDError, InputError, UnsupportedModelError
from hired.recipe import Recipe

# [B, L] (or [B, L, ...]) inputs that must shrink together with input_ids.
PER_TOKEN_INPUTS = ("labels", "token_type_ids", "mm_token_type_ids", "inputs_embeds")
CACHE_ARGS = ("past_key_values", "cache")


@dataclass
class EncodedBatch:
    """A batch through the vision encoder: its per-batch step (layouts, selections) and each
    image's packed features (the model's packing, merges already applied)."""

    step: BatchStep
    packed: list


class ImageEncoder:
    """HiRED's image encoding on one transformers model: the model's own encoding with the score
    hooks on, then the per-batch step. Public for tools that time its parts (``hired bench``)."""

    def __init__(self, model: nn.Module, config: HiREDConfig):
        self.model = model
        self.family, self.row = family_for_model(model)
        self.recipe = Recipe.build(model.config, config)
        self.row.check(model)
        self.layers = self.row.vision_layers(model)
        deepest = max(self.recipe.score_layers)
        if deepest >= len(self.layers):
            raise UnsupportedModelError(f"vision layer {deepest} is scored but the tower has {len(self.layers)} layers")

    @property
    def config(self) -> HiREDConfig:
        return self.recipe.config

    def recorder(self) -> ScoreRecorder:
        return ScoreRecorder(self.recipe.requests, self.recipe.has_cls, self.recipe.key_layers)

    @contextlib.contextmanager
    def scoring(self) -> Iterator[ScoreRecorder]:
        """The score hooks on the scored vision layers while the block runs; yields the recorder."""
        recorder = self.recorder()
        sources = {layer: self.row.qk(self.layers[layer]) for layer in recorder.layers}
        with recording(recorder, sources):
            yield recorder

    def image_call(self, kwargs: dict[str, Any]) -> ImageCall:
        """The image arguments of a call (removed from ``kwargs``), plus ``input_ids`` (kept)."""
        call = {key: kwargs.pop(key) for key in self.row.image_args if kwargs.get(key) is not None}
        if kwargs.get("input_ids") is not None:
            call["input_ids"] = kwargs["input_ids"]
        return call

    def step(self, call: ImageCall) -> BatchStep:
        images = self.row.image_inputs(self.model, call)
        return self.recipe.batch([self.recipe.layout(image) for image in images], sizes=[i.size for i in images])

    def plain(self, call: ImageCall) -> list:
        """The model's own image encoding, no hooks (the baseline ``hired bench`` times)."""
        step = self.step(call)
        return self.row.encode(self.model, encoder_args(call), [layout.encoder_crops for layout in step.layouts])

    def run(self, call: ImageCall) -> EncodedBatch:
        """The model's own image encoding (ViT + projector + packing) with the score hooks on;
        the policy selects as soon as the scores exist, and merging policies merge the vision
        features before the projector (as their reference code does), through a hook on its input."""
        step = self.step(call)
        final_layer = self.recipe.requests["final"].layer
        with self.scoring() as recorder:

            def select() -> None:
                step.select(recorder.scores["final"], recorder.scores["init"],
                            recorder.keys[final_layer] if self.recipe.merges else None)

            def merge_before_projector(_module: nn.Module, args: tuple) -> tuple:
                select()
                if self.row.packed_projector:  # [sum L_i, D]: each image's rows as one crop
                    rows = args[0].split([layout.length - layout.newlines for layout in step.layouts])
                    merged = step.merge([r[None] for r in rows])
                    return (torch.cat([m[0] for m in merged]), *args[1:])
                return (torch.cat(step.merge(args[0])), *args[1:])

            handle = (self.row.projector(self.model).register_forward_pre_hook(merge_before_projector)
                      if self.recipe.merges else None)
            try:
                packed = self.row.encode(self.model, encoder_args(call),
                                         [layout.encoder_crops for layout in step.layouts])
            finally:
                if handle is not None:
                    handle.remove()
        if "final" not in recorder.scores or "init" not in recorder.scores:
            raise HiREDError("internal error: the vision tower ran without the scoring hooks firing")
        select()
        return EncodedBatch(step, packed)

    def cut(self, encoded: EncodedBatch) -> tuple[list, list[ImageReport]]:
        """Each image's kept features (newlines included) and its report."""
        return encoded.step.cut(encoded.packed)

    def encode(self, call: ImageCall) -> tuple[list, list[ImageReport]]:
        return self.cut(self.run(call))

    @property
    def keeps_everything(self) -> bool:
        """The config keeps every token of every image whatever the scores (budget 1.0, a
        fixed-budget policy, the model's newlines): then the call needs no change at all."""
        config = self.config
        return (config.is_ratio and config.budget >= 1.0 and self.recipe.count_known
                and config.newline_policy != "none")


def encoder_args(call: ImageCall) -> ImageCall:
    return {key: value for key, value in call.items() if key != "input_ids"}


class HFPatch:
    """HiRED on one transformers model: validated on construction, before the model is touched."""

    def __init__(self, model: nn.Module, config: HiREDConfig):
        self.model = model
        self.encoder = ImageEncoder(model, config)
        self.config = config
        self.fresh_state()

    def fresh_state(self) -> None:
        """Per-instance state that is not copied with the model (locks, caches seen)."""
        self.lock = threading.RLock()
        self.depth = 0  # > 0 inside a patched generate: its own forward calls pass straight through
        # caches a patched generate returned -> (the caller's prompt, the shortened prompt and mask it holds)
        self.prompts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("lock", "depth", "prompts")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.fresh_state()

    # -- one call ---------------------------------------------------------------------------------
    def prepare(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Encode images, keep the budget, shorten the prompt: kwargs for the original call."""
        if kwargs.get("input_ids") is None:
            raise InputError("hired needs input_ids to find the image placeholders; pass input_ids (inputs_embeds "
                             "may come beside them)")
        if kwargs.get("position_ids") is not None:
            raise InputError("position_ids number the whole prompt, which token dropping shortens; leave them out "
                             "(or use budget 1.0)")
        kwargs = dict(kwargs)
        check_pixels(kwargs.get("pixel_values"))
        call = self.encoder.image_call(kwargs)
        encoded = self.encoder.run(call)
        features, reports = self.encoder.cut(encoded)
        rope = self.encoder.row.rope
        positions = rope.index(self.model, kwargs, call) if rope is not None else None
        input_ids = kwargs.pop("input_ids")
        extra = {key: kwargs.pop(key) for key in PER_TOKEN_INPUTS if kwargs.get(key) is not None}
        image_token_id = self.model.config.image_token_id
        if positions is not None:  # each kept token keeps the unmodified prompt's position
            kept = [layout.sequence_mask(report.keep_mask & layout.valid, self.config.newline_policy)
                    for layout, report in zip(encoded.step.layouts, reports)]
            extra["position_ids"] = kept_first(positions[0].permute(1, 2, 0), input_ids, image_token_id, kept)
        shrunk = shrink_prompt(
            input_ids,
            kwargs.pop("attention_mask", None),
            image_token_id,
            [r.llm_tokens_full for r in reports],
            [r.llm_tokens for r in reports],
            self.pad_token_id(),
            extra,
        )
        check_context(self.model.config, shrunk["input_ids"].shape[1], "the prompt after token dropping")
        image_tokens = int((shrunk["input_ids"] == image_token_id).sum())
        if positions is not None:  # decoding continues after the full prompt's last position
            kwargs["position_ids"] = shrunk.pop("position_ids").permute(2, 0, 1)
            dropped = (input_ids == image_token_id).sum(1) - (shrunk["input_ids"] == image_token_id).sum(1)
            rope.set_deltas(self.model, positions[1] + dropped.to(positions[1])[:, None])
        self.model.hired_report = HiREDReport(self.config.method, self.config.to_dict(), reports, image_tokens)
        kwargs.update({k: v for k, v in shrunk.items() if v is not None})
        kwargs["mm_encoder_outputs"] = {"image": self.encoder.row.encoder_outputs(features)}
        return kwargs

    def pass_through(self, original: Callable, kwargs: dict[str, Any]) -> Any:
        """The call as given (nothing to drop), with the score hooks on for the report."""
        check_pixels(kwargs.get("pixel_values"))
        if isinstance(kwargs.get("input_ids"), Tensor):
            check_context(self.model.config, kwargs["input_ids"].shape[-1])
        call = self.encoder.image_call(dict(kwargs))
        try:
            step = self.encoder.step(call)
        except HiREDError:  # the call does not tell the images' geometry (e.g. no image_sizes): no report
            self.model.hired_report = None
            return original(**kwargs)
        recorder = self.encoder.recorder()
        sources = {layer: self.encoder.row.qk(self.encoder.layers[layer]) for layer in recorder.layers}
        with recording(recorder, sources):
            out = original(**kwargs)
        reports = []
        if "final" in recorder.scores:  # the images were encoded in this call (not from a cache)
            step.select(recorder.scores["final"], recorder.scores["init"],
                        recorder.keys.get(self.encoder.recipe.requests["final"].layer))
            reports = step.reports()
        tokens = sum(r.llm_tokens for r in reports)
        self.model.hired_report = HiREDReport(self.config.method, self.config.to_dict(), reports, tokens)
        return out

    def pad_token_id(self) -> int:
        for source in (self.model.generation_config, self.model.config, self.model.config.text_config):
            pad = getattr(source, "pad_token_id", None)
            if isinstance(pad, int):
                return pad
        return 0

    # -- the patched entry points -------------------------------------------------------------------
    def forward(self, original: Callable, args: tuple, kwargs: dict[str, Any]) -> Any:
        kwargs = named_arguments(original, args, kwargs)
        if torch.compiler.is_compiling() and (self.depth or kwargs.get("pixel_values") is None):
            # a compiled decoding step (generate with a compiled forward): nothing of ours to do,
            # and dynamo cannot trace the lock
            return original(**kwargs)
        with self.lock:
            if self.depth:  # a step of our own generate: prepared already
                return original(**kwargs)
            if kwargs.get("pixel_values") is None:
                self.check_cache(kwargs)
                return original(**kwargs)
            if self.encoder.keeps_everything:
                return self.pass_through(original, kwargs)
            return original(**self.prepare(kwargs))

    def generate(self, original: Callable, args: tuple, kwargs: dict[str, Any]) -> Any:
        kwargs = named_arguments(original, args, kwargs)
        if kwargs.get("inputs") is not None:
            kwargs["input_ids"] = kwargs.pop("inputs")
        with self.lock:
            self.depth += 1
            try:
                return self.generate_locked(original, kwargs)
            finally:
                self.depth -= 1

    def generate_locked(self, original: Callable, kwargs: dict[str, Any]) -> Any:
        cache = next((kwargs[name] for name in CACHE_ARGS if kwargs.get(name) is not None), None)
        if cache is not None and cache in self.prompts:
            return self.continue_generation(original, kwargs, cache)
        if kwargs.get("pixel_values") is None:
            self.model.hired_report = None
            return original(**kwargs)
        if self.encoder.keeps_everything:
            return self.pass_through(original, kwargs)
        with torch.no_grad():
            prepared = self.prepare(kwargs)
        prompt, short = kwargs["input_ids"], prepared["input_ids"]
        if self.encoder.row.rope is not None:  # generate takes mRoPE positions with the text positions first
            text = GenerationMixin._prepare_position_ids_for_generation(
                self.model, short, {"attention_mask": prepared.get("attention_mask")})
            prepared["position_ids"] = torch.cat([text[None].expand(1, *short.shape).to(short),
                                                  prepared["position_ids"]])
        prepared.update(generation_lengths(self.model, kwargs, prompt.shape[1], short.shape[1]))
        out = original(**prepared)
        self.remember(out, prompt, short, prepared.get("attention_mask"))
        return restore_prompt(out, prompt, short.shape[1])

    def continue_generation(self, original: Callable, kwargs: dict[str, Any], cache: Any) -> Any:
        """A generate call on a cache that a patched generate filled: the caller's prompt (as
        returned: their own prompt + the answer) is mapped to the shortened one the cache holds."""
        prompt, short, short_mask = self.prompts[cache]
        input_ids = kwargs.get("input_ids")
        if input_ids is None or input_ids.shape[0] != prompt.shape[0] or input_ids.shape[1] < prompt.shape[1] \
                or not torch.equal(input_ids[:, :prompt.shape[1]].to(prompt.device), prompt):
            raise InputError("this cache holds a prompt whose image tokens hired shortened; continue with input_ids "
                             "that start with the sequences the patched generate returned")
        kwargs = dict(kwargs)
        for name in ("pixel_values", "image_sizes"):  # the cache already holds the images
            kwargs.pop(name, None)
        tail = input_ids[:, prompt.shape[1]:]
        kwargs["input_ids"] = torch.cat([short.to(tail.device), tail], 1)
        mask = kwargs.get("attention_mask")
        if mask is not None:
            if mask.shape != input_ids.shape:
                raise InputError(
                    f"attention_mask {tuple(mask.shape)} does not match input_ids {tuple(input_ids.shape)}"
                )
            head = short_mask if short_mask is not None else torch.ones_like(short)
            kwargs["attention_mask"] = torch.cat([head.to(mask), mask[:, prompt.shape[1]:]], 1)
        kwargs.update(generation_lengths(self.model, kwargs, input_ids.shape[1], kwargs["input_ids"].shape[1]))
        out = original(**kwargs)
        self.remember(out, input_ids, kwargs["input_ids"], kwargs.get("attention_mask"))
        self.model.hired_report = None
        return restore_prompt(out, input_ids, kwargs["input_ids"].shape[1])

    def remember(self, out: Any, prompt: Tensor, short: Tensor, short_mask: Tensor | None) -> None:
        cache = next((getattr(out, name, None) for name in CACHE_ARGS if getattr(out, name, None) is not None), None)
        if cache is not None:
            mask = short_mask[:, :short.shape[1]] if short_mask is not None else None
            self.prompts[cache] = (prompt, short, mask)

    def check_cache(self, kwargs: dict[str, Any]) -> None:
        """A forward or text-only generate on a cache of a shortened prompt would misalign it."""
        cache = next((kwargs[name] for name in CACHE_ARGS if kwargs.get(name) is not None), None)
        if cache is not None and cache in self.prompts:
            raise InputError("this cache holds a prompt whose image tokens hired shortened; continue it with "
                             "generate(input_ids=<the returned sequences + new tokens>, past_key_values=...)")


def check_pixels(pixel_values: Any) -> None:
    if not isinstance(pixel_values, Tensor):
        raise InputError(f"pixel_values must be a tensor, got {type(pixel_values).__name__}")
    if pixel_values.is_floating_point() and not bool(torch.isfinite(pixel_values).all()):
        raise InputError("pixel_values hold NaN or infinite values; no token can be ranked by them")


def generation_lengths(model: nn.Module, kwargs: dict[str, Any], prompt_len: int, short_len: int) -> dict[str, Any]:
    """``max_length`` / ``min_length`` (from the call, its ``generation_config`` or the model's) moved
    by the tokens dropped, so that they count from the caller's prompt as for the unmodified model."""
    dropped = prompt_len - short_len
    given = kwargs.get("generation_config")
    sources = [kwargs, vars(given) if given is not None else {}, vars(model.generation_config)]

    def first(name: str) -> Any:
        return next((source[name] for source in sources if source.get(name) is not None), None)

    out: dict[str, Any] = {}
    if first("max_new_tokens") is None and (max_length := first("max_length")) is not None:
        if prompt_len >= max_length:
            raise InputError(f"Input length of input_ids is {prompt_len}, but `max_length` is set to {max_length}; "
                             "increase max_length or, better, set max_new_tokens")
        out["max_length"] = max_length - dropped
    if first("min_new_tokens") is None and (min_length := first("min_length")) is not None:
        out["min_length"] = max(0, min_length - dropped)
    if out and given is not None:  # a generation_config object takes them, not kwargs beside it
        import copy

        config = copy.deepcopy(given)
        for name, value in out.items():
            setattr(config, name, value)
        return {"generation_config": config}
    return out


class PatchedMethod:
    """A model's patched ``forward`` / ``generate``: an object, not a closure, so that
    ``copy.deepcopy`` of the model copies it with the model (its patch and original bound to the copy)."""

    def __init__(self, patch: HFPatch, name: str, original: Callable):
        self.patch, self.name, self.original = patch, name, original
        functools.update_wrapper(self, original)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.patch, self.name)(self.original, args, kwargs)


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
