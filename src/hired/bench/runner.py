"""`hired bench`: the full model and each (method, budget) arm, timed interleaved.

For every image size and batch size, each repetition runs every arm once in a fixed order
(full, arm 1, arm 2, ..., full, arm 1, ...), so slow drift (thermal, other processes) hits every
arm alike. The first ``warmup`` repetitions are discarded. Medians and min/max over the rest are
reported, and each arm is compared with the ``full`` arm (the untouched model) of the same run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

import hired
from hired.bench import flops
from hired.bench.timing import release_free_memory, synchronize, timed_generate
from hired.config import HiREDConfig, parse_budget
from hired.errors import HiREDError
from hired.evaluation.runner import FULL, Arm, make_arms
from hired.loading import LoadedModel

SCHEMA = "hired-bench/1"
PROMPT = "Describe the picture."
# Metrics of a generate call; "ratio to full" is arm median / full median for each.
METRICS = ("ttft", "decode_tokens_per_s", "latency", "throughput", "peak_memory_bytes")


@dataclass
class BenchSettings:
    model: str = "tiny-llava-next"
    budgets: list[float | int] = field(default_factory=lambda: [1.0, 0.4, 0.2, 0.1])
    methods: list[str] = field(default_factory=lambda: [FULL, "hired"])
    image_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(672, 672)])  # (width, height)
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    new_tokens: int = 32
    runs: int = 5
    warmup: int = 1
    device: str = "auto"
    dtype: str = "auto"
    memory_cap_gb: float | None = None
    llm_layers: int | None = None
    vit_layers: int | None = None
    alpha: float = 0.5
    seed: int = 0
    prompt: str = PROMPT
    overhead: bool = True  # time plain ViT vs ViT + scoring + selection

    def validate(self) -> list[Arm]:
        for name in ("new_tokens", "runs"):
            if getattr(self, name) < 1:
                raise HiREDError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        if self.warmup < 0:
            raise HiREDError(f"--warmup must be >= 0; got {self.warmup}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise HiREDError(f"--batch-size values must be >= 1; got {self.batch_sizes}")
        if not self.image_sizes or any(w < 1 or h < 1 for w, h in self.image_sizes):
            raise HiREDError(f"--image sizes must be positive WxH; got {self.image_sizes}")
        if self.memory_cap_gb is not None and not self.memory_cap_gb > 0:
            raise HiREDError(f"--memory-cap-gb must be > 0; got {self.memory_cap_gb}")
        for name in ("llm_layers", "vit_layers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise HiREDError(f"--{name.replace('_', '-')} must be >= 1; got {value}")
        if not self.budgets:
            raise HiREDError("--budgets is empty")
        if not self.methods:
            raise HiREDError("--methods is empty")
        return make_arms(self.methods, self.budgets)  # raises ConfigError (a HiREDError) on bad ones


# -- parsing CLI lists -----------------------------------------------------------------------
def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_budgets(text: str) -> list[float | int]:
    budgets = [parse_budget(part) for part in split_list(text)]
    for budget in budgets:
        HiREDConfig(budget=budget)  # range check with the library's own message
    if not budgets:
        raise HiREDError(f"--budgets must list at least one budget; got {text!r}")
    return budgets


def parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in split_list(text)]
    except ValueError:
        raise HiREDError(f"{option} takes comma-separated integers like 1,4; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise HiREDError(f"{option} values must be integers >= 1; got {text!r}")
    return values


def parse_size(text: str) -> tuple[int, int]:
    """'672x672' -> (width, height)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise HiREDError(f"--image takes WxH sizes such as 672x672; got {text!r}") from None
    if width < 1 or height < 1 or width > 16384 or height > 16384:
        raise HiREDError(f"--image size must be between 1x1 and 16384x16384; got {text!r}")
    return width, height


# -- inputs ----------------------------------------------------------------------------------
def noise_images(width: int, height: int, count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def make_inputs(loaded: LoadedModel, width: int, height: int, batch: int, prompt: str = PROMPT,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """``batch`` different noise pictures of one size, each with the formatted prompt."""
    model = loaded.model
    images = noise_images(width, height, batch, seed)
    text = [loaded.format_prompt(prompt)] * batch
    inputs = loaded.processor(images=images, text=text, return_tensors="pt", padding=True).to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return dict(inputs)


def is_next(model: torch.nn.Module) -> bool:
    return hasattr(model.config, "image_grid_pinpoints")


def image_geometry(model: torch.nn.Module, height: int, width: int) -> dict[str, int]:
    """Crops the ViT runs on, partition tokens, tokens kept by the full model (valid after
    unpadding) and the image tokens it gives the language model (newlines included)."""
    from hired.models import adapter_for
    from hired.models.llava_next import NEWLINE

    adapter = adapter_for(model)(model, HiREDConfig(budget=1.0))
    vision = model.config.vision_config
    per_crop = (vision.image_size // vision.patch_size) ** 2
    if not is_next(model):
        return {"crops": 1, "total": per_crop, "valid": per_crop, "llm_tokens": per_crop}
    crops, _ = adapter.geometry((height, width))
    layout = adapter._layout((height, width), crops)
    valid = int((layout != NEWLINE).sum())
    return {"crops": crops, "total": crops * per_crop, "valid": valid, "llm_tokens": int(layout.numel())}


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


# -- scoring + selection overhead ------------------------------------------------------------
def plain_image_features(model: torch.nn.Module, inputs: dict) -> Any:
    kwargs = {"pixel_values": inputs["pixel_values"], "return_dict": True}
    if is_next(model):
        kwargs["image_sizes"] = inputs["image_sizes"]
    return model.model.get_image_features(**kwargs)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        fn()
    synchronize(device)
    return time.perf_counter() - start


def measure_overhead(loaded: LoadedModel, arms: list[Arm], inputs: dict, settings: BenchSettings,
                     geometry: dict, advance: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
    """Plain ViT + projector (``get_image_features``) vs the adapter's ``encode_images`` (the same
    call with the scoring hooks, then selection and feature gathering), interleaved.

    One arm per method: its budget with the fewest tokens. ``selection`` is measured inside the
    hooked call (encode_images minus its own get_image_features), so it is free of drift."""
    from hired.models import adapter_for

    model = loaded.model
    device = model.device
    hired.remove(model)
    chosen: dict[str, Arm] = {}
    for arm in arms:
        if arm.method == FULL:
            continue
        tokens = arm.config().tokens_for(geometry["total"])
        if arm.method not in chosen or tokens < chosen[arm.method].config().tokens_for(geometry["total"]):
            chosen[arm.method] = arm
    adapters = {m: adapter_for(model)(model, arm.config(settings.alpha, settings.seed)) for m, arm in chosen.items()}
    base = model.model
    original = base.get_image_features
    plain: list[float] = []
    encode: dict[str, list[float]] = {m: [] for m in chosen}
    inner: dict[str, list[float]] = {m: [] for m in chosen}
    sizes = inputs.get("image_sizes")
    for rep in range(settings.warmup + settings.runs):
        t = _timed(lambda: plain_image_features(model, inputs), device)
        if rep >= settings.warmup:
            plain.append(t)
        advance()
        for method, adapter in adapters.items():
            seen: list[float] = []

            def hooked(*args: Any, **kwargs: Any) -> Any:
                synchronize(device)
                start = time.perf_counter()
                out = original(*args, **kwargs)
                synchronize(device)
                seen.append(time.perf_counter() - start)
                return out

            base.get_image_features = hooked  # instance attribute: only this call sees it
            try:
                t = _timed(lambda: adapter.encode_images(inputs["pixel_values"], sizes), device)
            finally:
                del base.get_image_features
            if rep >= settings.warmup:
                encode[method].append(t)
                inner[method].append(seen[0])
            advance()
    rows = []
    plain_ms = 1000 * statistics.median(plain)
    for method, arm in chosen.items():
        encode_ms = 1000 * statistics.median(encode[method])
        selection = [e - i for e, i in zip(encode[method], inner[method])]
        selection_ms = 1000 * statistics.median(selection)
        rows.append({
            "method": method,
            "budget": arm.budget,
            "batch_size": int(inputs["input_ids"].shape[0]),
            "runs": {"plain_vit_s": plain, "hooked_encode_s": encode[method], "hooked_vit_s": inner[method],
                     "selection_s": selection},
            "plain_vit_ms": plain_ms,
            "hooked_encode_ms": encode_ms,
            "selection_ms": selection_ms,
            "overhead_ms": encode_ms - plain_ms,
            "overhead_share": (encode_ms - plain_ms) / plain_ms,
            "selection_share": selection_ms / plain_ms,
        })
    return rows


# -- environment -----------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "hired": hired.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "dtype": str(dtype).replace("torch.", ""),
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        env["gpu_total_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    return env


def apply_memory_cap(settings: BenchSettings, device: torch.device, notes: list[str]) -> None:
    if settings.memory_cap_gb is None:
        return
    if device.type != "cuda":
        notes.append(f"--memory-cap-gb {settings.memory_cap_gb:g} ignored: the cap only applies to CUDA devices")
        return
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, settings.memory_cap_gb * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    notes.append(f"CUDA memory capped at {settings.memory_cap_gb:g} GiB ({fraction:.3f} of {total / 2**30:.1f} GiB)")


# -- the whole benchmark ---------------------------------------------------------------------
def load_for_bench(settings: BenchSettings) -> LoadedModel:
    from hired.loading import load
    from hired.presets import PRESETS

    if settings.model in PRESETS:
        return load(settings.model, device=settings.device, dtype=settings.dtype, seed=settings.seed,
                    llm_layers=settings.llm_layers, vit_layers=settings.vit_layers)
    if settings.llm_layers is not None or settings.vit_layers is not None:
        raise HiREDError("--llm-layers / --vit-layers only apply to presets (random-weight models of real shapes)")
    return load(settings.model, device=settings.device, dtype=settings.dtype)


def run_bench(settings: BenchSettings, progress: bool = True, log: Callable[[str], None] = lambda s: None,
              loaded: LoadedModel | None = None) -> dict[str, Any]:
    """Measure every arm; returns the results dict that :mod:`hired.bench.report` writes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    arms = settings.validate()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    loaded = loaded or load_for_bench(settings)
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
                    row.update(image_size=[width, height], batch_size=batch, crops=geometry["crops"],
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
                    row["image_size"] = [width, height]
                overhead.extend(rows)
                # ViT share of the full model's TTFT, to read the measured speedup against the ideal.
                full_rows = [r for r in results if r["method"] == FULL and r["image_size"] == [width, height]
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
