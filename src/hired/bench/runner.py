"""`hired bench`: the full model and each (method, budget) arm, timed interleaved.

For every image size and batch size, each repetition runs every arm once in a fixed order
(full, arm 1, arm 2, ..., full, arm 1, ...), so slow drift (thermal, other processes) hits every
arm alike. The first ``warmup`` repetitions are discarded. Medians and min/max over the rest are
reported, and each arm is compared with the ``full`` arm (the untouched model) of the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

import hired
from hired.bench import flops
from hired.bench.environment import apply_memory_cap, environment
from hired.bench.inputs import image_geometry, make_inputs
from hired.bench.overhead import measure_overhead
from hired.bench.settings import BenchSettings
from hired.bench.timing import release_free_memory, timed_generate
from hired.checks import check_new_tokens
from hired.errors import OptionError
from hired.experiments import FULL, Arm
from hired.loading import LoadedModel, set_torch_threads

SCHEMA = "hired-bench/1"
# Metrics of a generate call; "ratio to full" is arm median / full median for each.
METRICS = ("ttft", "decode_tokens_per_s", "latency", "throughput", "peak_memory_bytes")


# -- one generate call -----------------------------------------------------------------------
def free_accelerator_memory(device: torch.device) -> None:
    release_free_memory()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_arm(loaded: LoadedModel, arm: Arm, inputs: dict, settings: BenchSettings) -> dict[str, Any]:
    """One generate call of one arm: raw timings, memory and what was kept (or OOM)."""
    model = loaded.model
    hired.remove(model)
    if arm.method != FULL:
        hired.apply(model, arm.config(settings.alpha, settings.seed))
    batch = inputs["input_ids"].shape[0]
    try:
        _, timing = timed_generate(model, inputs, settings.new_tokens, force_length=True)
    except torch.OutOfMemoryError:
        hired.remove(model)
        free_accelerator_memory(model.device)
        return {"oom": True}
    report = getattr(model, "hired_report", None)
    hired.remove(model)
    record = {"oom": False, **asdict(timing)}
    record["decode_tokens_per_s"] = (
        batch * (timing.new_tokens - 1) / timing.decode_time if timing.new_tokens > 1 and timing.decode_time > 0
        else None
    )
    record["throughput"] = batch * timing.new_tokens / timing.latency
    if report is not None:
        record["kept_per_image"] = [r.kept for r in report.images]
        record["llm_image_tokens_per_image"] = [r.llm_tokens for r in report.images]
        record["total_per_image"] = [r.total for r in report.images]
    return record


# -- summaries -------------------------------------------------------------------------------
def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    q = np.percentile(values, [25, 75]).tolist() if len(values) > 1 else [values[0], values[0]]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q[0], "q3": q[1]}


def metric_values(runs: list[dict], metric: str) -> list[float]:
    return [r[metric] for r in runs if not r.get("oom") and r.get(metric) is not None]


def summarize_arm(arm: Arm, runs: list[dict], geometry: dict, batch: int, full_len: int) -> dict[str, Any]:
    ok = [r for r in runs if not r["oom"]]
    row: dict[str, Any] = {
        "arm": arm.key,
        "method": arm.method,
        "budget": arm.budget,
        "adaptive": arm.adaptive,
        "runs": runs,
        "oom_runs": len(runs) - len(ok),
        "status": "ok" if ok else "OOM",
        "stats": {metric: spread(metric_values(runs, metric)) for metric in METRICS},
    }
    row["median"] = {metric: (s["median"] if s else None) for metric, s in row["stats"].items()}
    row["total"] = geometry["total"]
    if arm.method == FULL:
        row["kept"] = geometry["valid"]
        row["llm_image_tokens"] = geometry["llm_tokens"]
    elif ok:
        kept = ok[-1]["kept_per_image"]
        row["kept"] = kept[0] if len(set(kept)) == 1 else sum(kept) / len(kept)
        row["llm_image_tokens"] = max(ok[-1]["llm_image_tokens_per_image"])
    else:
        row["kept"] = row["llm_image_tokens"] = None
    image_tokens = row["llm_image_tokens"]
    row["seq_len"] = None if image_tokens is None else full_len - geometry["llm_tokens"] + image_tokens
    return row


def compare(row: dict, full: dict, vision: flops.VisionShape, text: flops.TextShape, geometry: dict,
            batch: int, full_len: int) -> None:
    """Ratios to the full arm (arm median / full median) and the ideal TTFT speedup, in place."""
    ratios = {}
    for metric in METRICS:
        a, f = row["median"][metric], full["median"][metric]
        ratios[metric] = a / f if a is not None and f else None
    row["vs_full"] = ratios
    a, f = row["median"]["ttft"], full["median"]["ttft"]
    row["ttft_speedup"] = f / a if a and f else None
    if row["seq_len"] is None:
        row["ideal_ttft_speedup"] = row["flops"] = None
    else:
        row["flops"] = {
            "full": flops.ttft_flops(vision, text, geometry["crops"], full_len, batch).to_dict(),
            "kept": flops.ttft_flops(vision, text, geometry["crops"], row["seq_len"], batch).to_dict(),
        }
        row["ideal_ttft_speedup"] = row["flops"]["full"]["total"] / row["flops"]["kept"]["total"]
    ideal, measured = row["ideal_ttft_speedup"], row["ttft_speedup"]
    row["speedup_of_ideal"] = measured / ideal if measured and ideal else None


# -- the whole benchmark ---------------------------------------------------------------------
def load_for_bench(settings: BenchSettings) -> LoadedModel:
    from hired.loading import load
    from hired.presets import PRESETS

    if settings.model in PRESETS:
        return load(settings.model, device=settings.device, dtype=settings.dtype, seed=settings.seed,
                    llm_layers=settings.llm_layers, vit_layers=settings.vit_layers)
    if settings.llm_layers is not None or settings.vit_layers is not None:
        raise OptionError("--llm-layers / --vit-layers only apply to presets (random-weight models of real shapes)")
    return load(settings.model, device=settings.device, dtype=settings.dtype)


def run_bench(settings: BenchSettings, progress: bool = True, log: Callable[[str], None] = lambda s: None,
              loaded: LoadedModel | None = None) -> dict[str, Any]:
    """Measure every arm; returns the results dict that :mod:`hired.bench.report` writes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    arms = settings.validate()
    set_torch_threads()
    loaded = loaded or load_for_bench(settings)
    check_new_tokens(loaded.model.config, settings.new_tokens, "--new-tokens")
    model = loaded.model
    device = model.device
    notes: list[str] = []
    apply_memory_cap(settings, device, notes)
    for note in notes:
        log(note)
    vision, text = flops.shapes_of(model.config)
    cells = [(w, h, b) for w, h in settings.image_sizes for b in settings.batch_sizes]
    reps = settings.warmup + settings.runs
    n_methods = len({a.method for a in arms if a.method != FULL})
    steps = len(cells) * reps * len(arms)
    if settings.overhead and n_methods:
        steps += len(settings.image_sizes) * reps * (1 + n_methods)
    results: list[dict] = []
    overhead: list[dict] = []
    calls = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=not progress, transient=False) as bar:
        task = bar.add_task("bench", total=steps)
        for width, height in settings.image_sizes:
            geometry = image_geometry(model, height, width)
            for batch in settings.batch_sizes:
                inputs = make_inputs(loaded, width, height, batch, settings.prompt, settings.seed)
                full_len = int(inputs["input_ids"].shape[1])
                raw: dict[str, list[dict]] = {arm.key: [] for arm in arms}
                for rep in range(reps):
                    for arm in arms:
                        phase = "warm-up" if rep < settings.warmup else f"run {rep - settings.warmup + 1}"
                        bar.update(task, description=f"{width}x{height} b={batch} {phase} {arm.key}")
                        record = run_arm(loaded, arm, inputs, settings)
                        record["call_index"] = calls  # order of the calls: shows the interleaving
                        calls += 1
                        if rep >= settings.warmup:
                            record["repetition"] = rep - settings.warmup
                            raw[arm.key].append(record)
                        bar.advance(task)
                rows = [summarize_arm(arm, raw[arm.key], geometry, batch, full_len) for arm in arms]
                full = rows[0]
                for row in rows:
                    row.update(image_size=[height, width], batch_size=batch, crops=geometry["crops"],
                               prompt_len=full_len)
                    compare(row, full, vision, text, geometry, batch, full_len)
                results.extend(rows)
                del inputs
                free_accelerator_memory(device)
            if settings.overhead and n_methods:
                inputs = make_inputs(loaded, width, height, settings.batch_sizes[0], settings.prompt, settings.seed)
                bar.update(task, description=f"{width}x{height} scoring + selection overhead")
                try:
                    rows = measure_overhead(loaded, arms, inputs, settings, geometry, lambda: bar.advance(task))
                except torch.OutOfMemoryError:
                    free_accelerator_memory(device)
                    rows = [{"method": "*", "status": "OOM"}]
                for row in rows:
                    row["image_size"] = [height, width]
                overhead.extend(rows)
                # ViT share of the full model's TTFT, to read the measured speedup against the ideal.
                full_rows = [r for r in results if r["method"] == FULL and r["image_size"] == [height, width]
                             and r["batch_size"] == settings.batch_sizes[0]]
                if rows and "plain_vit_ms" in rows[0] and full_rows and full_rows[0]["median"]["ttft"]:
                    full_rows[0]["vit_share_of_ttft"] = rows[0]["plain_vit_ms"] / 1000 / full_rows[0]["median"]["ttft"]
                del inputs
                free_accelerator_memory(device)
    preset = None
    from hired.presets import PRESETS

    if settings.model in PRESETS:
        preset = PRESETS[settings.model].checkpoint
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {**asdict(settings), "image_sizes": [list(s) for s in settings.image_sizes],
                   "arms": [a.key for a in arms]},
        "model": {
            "name": loaded.name,
            "random_weights": loaded.random_weights,
            "shapes_of": preset,
            "vision": asdict(vision),
            "text": asdict(text),
        },
        "environment": environment(device, model.dtype),
        "definitions": DEFINITIONS,
        "flops_convention": flops.CONVENTION,
        "notes": notes,
        "results": results,
        "overhead": overhead,
    }


DEFINITIONS = {
    "ttft": "seconds from the generate call with preprocessed inputs to the first token's logits "
            "(ViT + scoring + selection + LLM prefill)",
    "decode_tokens_per_s": "tokens generated after the first, over all sequences of the batch, / their time",
    "latency": "seconds of the whole generate call for exactly new_tokens tokens",
    "throughput": "new tokens of all sequences of the batch / latency (the paper's throughput at batch 1)",
    "peak_memory_bytes": "CUDA max_memory_allocated during the call; on CPU the process peak RSS (VmHWM) "
                         "during the call, reset before it after freed heap memory is returned to the OS",
    "vs_full": "arm median / full median of the same run (ttft < 1 is faster)",
    "ttft_speedup": "full median TTFT / arm median TTFT",
    "ideal_ttft_speedup": "TTFT FLOPs of the full over the kept sequence, ViT and projector on both sides",
    "overhead_share": "(median hooked encode_images - median plain get_image_features) / plain",
    "selection_share": "median (encode_images - its own get_image_features) / plain get_image_features",
}
