"""Scoring + selection overhead: the model's plain image encoding against the same encoding with
the CLS-score hooks, plus the per-image plans (selection and feature gathering), interleaved."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import hired
from hired.backends.hf import ImageEncoder
from hired.bench.settings import BenchSettings
from hired.bench.timing import synchronize
from hired.config import HiREDConfig
from hired.experiments import FULL, Arm
from hired.loading import LoadedModel


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of ``fn()`` without autograd, the device synchronized on both ends."""
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def smallest_budget_arms(arms: list[Arm], total: int) -> dict[str, Arm]:
    """One arm per method: its budget with the fewest tokens."""
    chosen: dict[str, Arm] = {}
    for arm in arms:
        if arm.method == FULL:
            continue
        tokens = arm.config().budget_tokens(total)
        if arm.method not in chosen or tokens < chosen[arm.method].config().budget_tokens(total):
            chosen[arm.method] = arm
    return chosen


def measure_overhead(loaded: LoadedModel, arms: list[Arm], inputs: dict, settings: BenchSettings,
                     geometry: dict, advance: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
    """Plain ViT + projector (the model's own encoding) against the hooked encoder run plus the
    per-batch step (selection and feature gathering), interleaved repetition by repetition.
    ``selection`` is the step alone."""
    model = loaded.model
    device = model.device
    hired.remove(model)
    chosen = smallest_budget_arms(arms, geometry["total"])
    encoders = {m: ImageEncoder(model, arm.config(settings.alpha, settings.seed)) for m, arm in chosen.items()}
    plain_encoder = next(iter(encoders.values()), None) or ImageEncoder(model, HiREDConfig(budget=1.0))
    call = plain_encoder.image_call(dict(inputs))
    plain: list[float] = []
    hooked: dict[str, list[float]] = {m: [] for m in chosen}
    selection: dict[str, list[float]] = {m: [] for m in chosen}
    for rep in range(settings.warmup + settings.runs):
        t, _ = timed(functools.partial(plain_encoder.plain, call), device)
        if rep >= settings.warmup:
            plain.append(t)
        advance()
        for method, encoder in encoders.items():
            t_encoder, encoded = timed(functools.partial(encoder.run, call), device)
            t_plan, _ = timed(functools.partial(encoder.cut, encoded), device)
            if rep >= settings.warmup:
                hooked[method].append(t_encoder)
                selection[method].append(t_plan)
            advance()
    rows = []
    plain_ms = 1000 * statistics.median(plain)
    for method, arm in chosen.items():
        encode = [a + b for a, b in zip(hooked[method], selection[method])]
        encode_ms = 1000 * statistics.median(encode)
        selection_ms = 1000 * statistics.median(selection[method])
        rows.append({
            "method": method,
            "budget": arm.budget,
            "adaptive": arm.adaptive,
            "batch_size": int(inputs["input_ids"].shape[0]),
            "runs": {"plain_vit_s": plain, "hooked_encode_s": encode, "hooked_vit_s": hooked[method],
                     "selection_s": selection[method]},
            "plain_vit_ms": plain_ms,
            "hooked_encode_ms": encode_ms,
            "selection_ms": selection_ms,
            "overhead_ms": encode_ms - plain_ms,
            "overhead_share": (encode_ms - plain_ms) / plain_ms,
            "selection_share": selection_ms / plain_ms,
        })
    return rows
