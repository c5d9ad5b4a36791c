"""`hired serve-bench` output: the table (terminal and results.md) and serving.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hired.results import markdown_rows, write_result_files
from hired.results import rich_table as results_table

COLUMNS = ["arm", "in flight", "image tok/req", "prompt tok", "req/s", "vs vanilla", "ideal", "out tok/s",
           "TTFT p50 s", "TTFT p95 s", "latency p50 s", "latency p95 s", "engine prefill ms", "prefill vs vanilla",
           "peak running", "KV holds req"]


def _f(value: float | None, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for arm in results["arms"]:
        for level in arm["levels"]:
            rows.append([
                arm["arm"], str(level["concurrency"]), _f(arm["image_tokens_mean"], ".0f"),
                _f(level["prompt_tokens_mean"], ".0f"), _f(level["requests_per_s"]),
                _f(level["speedup_requests"], ".2f", "x"), _f(arm["ideal"], ".2f", "x"),
                _f(level["output_tokens_per_s"], ".1f"), _f(level["ttft_p50"]), _f(level["ttft_p95"]),
                _f(level["latency_p50"]), _f(level["latency_p95"]),
                _f(1000 * level["engine"]["request_prefill_time_mean_s"]
                   if level.get("engine", {}).get("request_prefill_time_mean_s") else None, ".1f"),
                _f(level.get("speedup_engine_prefill"), ".2f", "x"), _f(level["max_running"], ".0f"),
                _f(level["kv_requests"], ",.0f"),
            ])
    return rows


def header_lines(results: dict[str, Any]) -> list[str]:
    model, split = results["model"], results["model"]["flops_split"]
    lm = model.get("serving_lm")
    arms = results["arms"]
    kv = arms[0]
    lines = [
        f"Model: {model['path']}" + (f" (demo ViT + random-weight LM {lm['layers']} x {lm['hidden']}, "
                                     f"built by serve-bench)" if lm else ""),
        f"FLOPs before the first token, full prompt: ViT {100 * split['vit']:.1f}%, projector "
        f"{100 * split['projector']:.1f}%, language model {100 * split['llm']:.1f}% "
        f"({split['total_gflops']:.1f} GFLOPs per request; LLaVA-NeXT-7B, 672 x 672: language model "
        f"{100 * model['flops_split_llava_next_7b']['llm']:.1f}%)",
        f"vLLM {kv.get('vllm_version', '?')}; KV cache {kv['kv_cache_tokens']:,} tokens, vLLM's reported concurrency "
        f"for {kv['max_model_len']} tokens per request: {kv['max_concurrency']:.1f}x (the same in every arm)"
        if kv.get("kv_cache_tokens") else "KV cache line not found in the server log",
        f"{len(results['pictures'])} distinct pictures (one per request; "
        f"{len({tuple(p['size']) for p in results['pictures']})} sizes, "
        f"{min(min(p['size']) for p in results['pictures'])} to {max(max(p['size']) for p in results['pictures'])} px "
        f"a side, five aspect ratios); "
        f"{results['settings']['max_tokens']} output tokens per request; dtype {results['settings']['dtype']}; "
        f"CPU {results['environment']['cpu']} ({results['environment']['cpus']} cores), "
        f"OMP_NUM_THREADS={results['environment']['omp_threads']}"
        + (", load average {:.1f} at start, {:.1f} at end (the machine is shared)".format(
            *results["environment"]["load_average_1m_start_end"])
           if results["environment"].get("load_average_1m_start_end") else ""),
        "Prompt tokens = text + hired.planned_tokens on every request: "
        + ", ".join(f"{a['arm']} {'yes' if a['prompt_tokens_as_planned'] else 'NO'}" for a in arms),
        "Cache hits (prefix / multimodal processor), all levels: "
        + ", ".join(f"{a['arm']} {sum(lv.get('engine', {}).get('prefix_cache_hits') or 0 for lv in a['levels']):.0f}"
                    f" / {sum(lv.get('engine', {}).get('mm_cache_hits') or 0 for lv in a['levels']):.0f}"
                    for a in arms),
    ]
    return lines


DEFINITIONS = [
    "req/s, out tok/s: completed requests and generated tokens per second of wall time of the level "
    "(closed loop: 'in flight' clients, each sending its next request when the last one ends)",
    "vs vanilla: req/s over vanilla's at the same level; ideal: prefill FLOPs (ViT + projector + LM) of the same "
    "request mix, vanilla / arm (hired.bench.flops; decode work is not in it)",
    "TTFT: until the first streamed chunk (vLLM sends it with the first token); latency: the whole request",
    "engine prefill: vLLM's own mean per-request prefill time (/metrics vllm:request_prefill_time_seconds: from "
    "scheduling to the first token, ViT included), the part of TTFT that token dropping shortens; the rest of "
    "TTFT is HTTP, image decoding and preprocessing in the API server, and queueing",
    "peak running: most requests vLLM ran at once (/metrics, polled every 0.25 s); KV holds req: KV-cache tokens "
    "vLLM allocated / (mean prompt + output tokens), the requests whose KV fits at once",
]


def markdown(results: dict[str, Any]) -> str:
    lines = ["# hired serve-bench", "", *[f"- {line}" for line in header_lines(results)], "",
             *markdown_rows(COLUMNS, table_rows(results))]
    lines += ["", *[f"- {d}" for d in DEFINITIONS], ""]
    return "\n".join(lines)


def rich_table(results: dict[str, Any]):
    return results_table("vLLM serving: vanilla vs HiRED", COLUMNS, table_rows(results), left=("arm",))


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    for arm in results["arms"]:
        x = [lv["concurrency"] for lv in arm["levels"]]
        line = left.plot(x, [lv["requests_per_s"] for lv in arm["levels"]], marker="o", label=arm["arm"])[0]
        right.plot(x, [lv["ttft_p50"] for lv in arm["levels"]], marker="o", color=line.get_color(), label=arm["arm"])
    for ax, title, ylabel in ((left, "Throughput", "requests / s"), (right, "Time to first token (p50)", "s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("requests in flight")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    right.set_yscale("log")
    fig.suptitle(f"vLLM serve on {results['environment']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    return write_result_files(results, out_dir, markdown, plot, "serving.png")
