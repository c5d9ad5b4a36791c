"""`hired serve-bench`: vanilla vLLM against vLLM + HiRED under concurrent load.

Each arm is one `vllm serve` (the vLLM venv's, as a subprocess on 127.0.0.1, stopped by its PID):
``vanilla`` is the plugin installed but not configured (bit-identical to vLLM without it, see
tests_vllm), ``hired@b`` sets ``HIRED_BUDGET=b``. Against each, closed-loop clients keep 1, 8,
32... streamed chat completions in flight over a mix of picture sizes (hired's scenes, all five
aspect ratios), every request generating exactly ``max_tokens`` tokens. Per arm and level:
requests/s, output tokens/s, TTFT and latency percentiles, the most requests vLLM ran at once
and its KV-cache use (``/metrics``), the KV-cache size and concurrency vLLM logs at start-up,
and the ideal: the ratio of prefill FLOPs (:mod:`hired.bench.flops`) of the same request mix.
This module runs in hired's own venv; only the server needs vLLM.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hired.bench import flops
from hired.bench.load import chat_body, run_load
from hired.bench.serving_model import ServingLM, build_serving_model, flops_split, vllm_shapes
from hired.bench.settings import MAX_COUNT
from hired.config import HiREDConfig
from hired.errors import HiREDError

SCHEMA = "hired-serve-bench/1"
KV_LINE = re.compile(r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: "
                     r"([\d.]+)x")
VANILLA = "vanilla"
VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")  # vllm serve --dtype's choices


@dataclass
class ServeBenchSettings:
    vllm: str
    work: str
    model: str | None = None  # a LLaVA(-NeXT) folder; None: build the benchmark model in work/
    budgets: list[float | int] = field(default_factory=lambda: [0.4, 0.2, 0.1])
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    requests: list[int] | None = None  # per level; default: see level_requests
    max_tokens: int = 16
    dtype: str = "bfloat16"
    max_model_len: int = 1024
    startup_timeout: float = 600

    def validate(self) -> None:
        """Every setting checked before anything is built or served (a bad --dtype or --vllm
        failed only when the first server started, minutes in)."""
        if self.dtype not in VLLM_DTYPES:
            raise HiREDError(f"--dtype must be one of {', '.join(VLLM_DTYPES)} (vllm serve --dtype); "
                             f"got {self.dtype!r}")
        if self.model is not None:
            from hired.loading import check_checkpoint_folder

            if not (Path(self.model) / "config.json").is_file():
                raise HiREDError(f"--model {self.model!r} is not a checkpoint folder with a config.json")
            check_checkpoint_folder(Path(self.model))
        if not (shutil.which(self.vllm) or Path(self.vllm).is_file()):
            raise HiREDError(f"--vllm {self.vllm!r} is not an executable; pass the vLLM venv's bin/vllm")
        vllm_version(self.vllm)
        if not self.concurrency or not all(1 <= c <= MAX_COUNT for c in self.concurrency):
            raise HiREDError(f"--concurrency must be integers from 1 to {MAX_COUNT}, got {self.concurrency}")
        if self.requests is not None and (len(self.requests) != len(self.concurrency)
                                          or not all(1 <= r <= 100_000 for r in self.requests)):
            raise HiREDError("--requests needs one count from 1 to 100000 per --concurrency level")
        if self.max_tokens < 1:
            raise HiREDError("--max-tokens must be >= 1")
        for budget in self.budgets:
            HiREDConfig(budget=budget)

    def level_requests(self) -> list[int]:
        """Default: max(30, 8 x in flight)."""
        return self.requests or [max(30, 8 * c) for c in self.concurrency]


def vllm_version(command: str, timeout: float = 300) -> str:
    """``command --version``, checked to be vLLM's: HiREDError naming the command otherwise."""
    import subprocess

    hint = "pass the vLLM venv's bin/vllm (with hired[vllm] installed there)"
    try:
        done = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise HiREDError(f"--vllm {command!r}: `{command} --version` did not run ({error}); {hint}") from None
    version = (done.stdout.strip().splitlines() or [""])[-1].strip()
    if done.returncode != 0 or not re.fullmatch(r"v?\d+\.\d+[\w.+-]*", version):
        raise HiREDError(f"--vllm {command!r} is not vLLM's command: `{command} --version` exited {done.returncode} "
                         f"printing {version[:60]!r}, not a version; {hint}")
    return version


def pictures(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` distinct scenes (hired's generator: five aspect ratios, 168 to 672 px a side),
    one question each, as data URLs. Every request of an arm gets a picture of its own, so no
    cache (prefix, multimodal processor, encoder) can serve one request from another."""
    from hired.data.scenes import scene

    out, index = [], 0
    while len(out) < count:
        image, qas = scene(seed, index)
        index += 1
        if not qas:
            continue
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append({"size": (image.height, image.width), "question": qas[0]["question"],
                    "url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()})
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize_level(load: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """One level's numbers (client side, and the engine's own means from /metrics)."""
    ok = [r for r in load["results"] if r["ok"]]
    wall = load["wall_s"]
    ttft = [r["ttft"] for r in ok]
    latency = [r["latency"] for r in ok]
    return {
        "concurrency": concurrency, "requests": len(load["results"]), "ok": len(ok), "wall_s": wall,
        "requests_per_s": len(ok) / wall, "output_tokens_per_s": sum(r["completion_tokens"] for r in ok) / wall,
        "ttft_p50": percentile(ttft, 0.5), "ttft_p95": percentile(ttft, 0.95),
        "latency_p50": percentile(latency, 0.5), "latency_p95": percentile(latency, 0.95),
        "latency_mean": statistics.fmean(latency) if latency else None,
        "prompt_tokens_mean": statistics.fmean(r["prompt_tokens"] for r in ok) if ok else None,
        "max_running": load["max_running"], "max_kv_usage": load["max_kv_usage"],
        "errors": sorted({r["error"] for r in load["results"] if r["error"]})[:3],
        "engine": load.get("engine", {}),
        "raw": load["results"],
    }


def kv_capacity(log_text: str) -> dict[str, Any]:
    match = KV_LINE.search(log_text)
    if not match:
        return {"kv_cache_tokens": None, "max_model_len": None, "max_concurrency": None}
    tokens, max_len, concurrency = match.groups()
    return {"kv_cache_tokens": int(tokens.replace(",", "")), "max_model_len": int(max_len.replace(",", "")),
            "max_concurrency": float(concurrency)}


def server_env(budget: float | int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIRED_")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if budget is not None:
        env["HIRED_BUDGET"] = str(budget)
    return env


def arm_name(budget: float | int | None) -> str:
    return VANILLA if budget is None else f"hired@{budget}"


def image_plan(model_config: Any, pics: list[dict], budget: float | int | None) -> list[dict[str, int]]:
    """Per picture: crops and the image tokens the language model gets under this arm."""
    from hired.api import planned_tokens
    from hired.families import family_for_config

    family = family_for_config(model_config)
    config = HiREDConfig(budget=1.0 if budget is None else budget, newlines="all")  # the plugin's default
    return [{"crops": family.layout(model_config, p["size"]).partitions,
             "image_tokens": planned_tokens(model_config, p["size"], config)} for p in pics]


def ideal_ratio(model_config: Any, plans: dict[str, list[dict]], text_tokens: list[int]) -> dict[str, float]:
    """Prefill FLOPs of the request mix (each picture once), vanilla over each arm (ViT and
    projector on both sides)."""
    vision, text = vllm_shapes(model_config)

    def total(plan: list[dict]) -> int:
        return sum(flops.ttft_flops(vision, text, p["crops"], p["image_tokens"] + t).total
                   for p, t in zip(plan, text_tokens))

    base = total(plans[VANILLA])
    return {name: base / total(plan) for name, plan in plans.items()}


def reference_split() -> dict[str, float]:
    """The same split for LLaVA-NeXT-Vicuna-7B's shapes (a 4-crop 672 x 672 picture: 5 crops,
    2,928 image tokens, plus ~20 text tokens), as vLLM runs it."""
    from hired.presets import build_config

    return flops_split(build_config("llava-next-vicuna-7b"), 5, 2928 + 20)


def run_arm(settings: ServeBenchSettings, model: Path, budget: float | int | None, bodies: list[bytes],
            log: Callable[[str], None]) -> dict[str, Any]:
    """One server; its levels one after another, each on its own slice of ``bodies``."""
    from hired.backends.vllm.server import VLLMServer

    name = arm_name(budget)
    args = ["--served-model-name", "bench", "--dtype", settings.dtype, "--max-model-len", str(settings.max_model_len),
            "--enforce-eager", "--limit-mm-per-prompt", '{"image": 1}']
    log_path = Path(settings.work) / f"serve-{name.replace('@', '-')}.log"
    try:
        with VLLMServer(settings.vllm, str(model), args, server_env(budget), log_path,
                        timeout=settings.startup_timeout) as server:
            log(f"{name}: server pid {server.proc.pid} ready after {server.startup_s:.1f} s")
            version = json.loads(server.get("/version")).get("version")
            warm = run_load(server.url, bodies[-2:], 1)  # warm-up on two extra pictures, not reported
            if not all(r["ok"] for r in warm["results"]):
                raise HiREDError(f"{name}: warm-up failed: {warm['results'][0].get('error')}")
            levels, start = [], 0
            for concurrency, requests in zip(settings.concurrency, settings.level_requests()):
                load = run_load(server.url, bodies[start:start + requests], concurrency)
                for r in load["results"]:
                    r["item"] += start
                start += requests
                level = summarize_level(load, concurrency)
                log(f"{name}: {concurrency} in flight, {level['ok']}/{level['requests']} ok, "
                    f"{level['requests_per_s']:.2f} req/s, TTFT p50 {level['ttft_p50']:.3f} s, engine prefill "
                    f"{level['engine'].get('request_prefill_time_mean_s') or 0:.3f} s/request")
                levels.append(level)
    except (RuntimeError, TimeoutError) as error:  # the server died or never became ready: one line
        raise HiREDError(f"{name}: {str(error).splitlines()[0].rstrip(':')}; see its log {log_path}") from None
    return {"arm": name, "budget": budget, "startup_s": server.startup_s, "levels": levels,
            "vllm_version": version, **kv_capacity(log_path.read_text())}


def run_serve_bench(settings: ServeBenchSettings, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    from transformers import AutoConfig

    from hired.bench.environment import cpu_model

    settings.validate()
    load_before = os.getloadavg()
    work = Path(settings.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(settings.model) if settings.model else build_serving_model(work / "model", ServingLM())
    model_config = AutoConfig.from_pretrained(model)
    pics = pictures(sum(settings.level_requests()) + 2)
    bodies = [chat_body("bench", p["url"], p["question"], settings.max_tokens) for p in pics]
    budgets: list[float | int | None] = [None, *settings.budgets]
    plans = {arm_name(b): image_plan(model_config, pics, b) for b in budgets}
    arms = [run_arm(settings, model, b, bodies, log) for b in budgets]

    # each picture's text tokens: vanilla's prompt length minus its image tokens
    text_tokens = {r["item"]: r["prompt_tokens"] - plans[VANILLA][r["item"]]["image_tokens"]
                   for level in arms[0]["levels"] for r in level["raw"] if r["ok"]}
    pics, texts = pics[:-2], [text_tokens.get(i) for i in range(len(pics) - 2)]
    if None in texts:
        raise HiREDError("vanilla failed some requests; see the server logs in --work")
    plans = {name: plan[:-2] for name, plan in plans.items()}
    ideal = ideal_ratio(model_config, plans, texts)
    for arm in arms:
        plan = plans[arm["arm"]]
        arm["image_tokens_mean"] = statistics.fmean(p["image_tokens"] for p in plan)
        arm["ideal"] = ideal[arm["arm"]]
        # the plugin's promise, checked on every request: prompt = text + planned image tokens
        arm["prompt_tokens_as_planned"] = all(
            r["prompt_tokens"] == texts[r["item"]] + plan[r["item"]]["image_tokens"]
            for level in arm["levels"] for r in level["raw"] if r["ok"])
        base = {lv["concurrency"]: lv for lv in arms[0]["levels"]}
        for level in arm["levels"]:
            ref = base[level["concurrency"]]
            level["speedup_requests"] = level["requests_per_s"] / ref["requests_per_s"]
            level["speedup_ttft_p50"] = ref["ttft_p50"] / level["ttft_p50"]
            prefill, ref_prefill = (lv["engine"].get("request_prefill_time_mean_s") for lv in (level, ref))
            level["speedup_engine_prefill"] = ref_prefill / prefill if prefill and ref_prefill else None
            level["kv_requests"] = (arm["kv_cache_tokens"] / (level["prompt_tokens_mean"] + settings.max_tokens)
                                    if arm["kv_cache_tokens"] and level["prompt_tokens_mean"] else None)
    crops = statistics.fmean(p["crops"] for p in plans[VANILLA])
    return {
        "schema": SCHEMA,
        "settings": {**asdict(settings), "model": str(model)},
        "model": {"path": str(model), "built": settings.model is None,
                  "serving_lm": asdict(ServingLM()) if settings.model is None else None,
                  "flops_split": flops_split(model_config, round(crops),
                                             round(statistics.fmean(texts) + arms[0]["image_tokens_mean"])),
                  "flops_split_llava_next_7b": reference_split()},
        "pictures": [{"size": p["size"], "question": p["question"]} for p in pics],
        "text_tokens": texts,
        "environment": {"cpu": cpu_model(), "cpus": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                        "kv_cache_space_gib": server_env(None)["VLLM_CPU_KVCACHE_SPACE"],
                        "load_average_1m_start_end": [load_before[0], os.getloadavg()[0]]},
        "flops_convention": flops.CONVENTION + "; ViT layers: those vLLM builds (up to the feature layer)",
        "arms": arms,
    }
