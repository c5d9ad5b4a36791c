"""Writing benchmark results: results.json, results.md, speedup.png, and the terminal table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hired.experiments import budget_label
from hired.results import markdown_rows, write_result_files
from hired.results import rich_table as draw_table

COLUMNS = [
    "method", "budget", "image", "batch", "kept / total", "TTFT s (min-max)", "TTFT speedup", "ideal",
    "decode tok/s", "latency s", "throughput tok/s", "peak mem GiB", "mem vs full",
]


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _ratio(value: float | None, suffix: str = "x") -> str:
    return "n/a" if value is None else f"{value:.2f}{suffix}"


def _kept(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in results["results"]:
        height, width = row["image_size"]
        common = [row["method"], budget_label(row), f"{width}x{height}",
                  str(row["batch_size"]), f"{_kept(row['kept'])} / {row['total']}"]
        if row["status"] == "OOM":
            rows.append(common + ["OOM"] + ["-"] * (len(COLUMNS) - len(common) - 1))
            continue
        stats, med, vs = row["stats"], row["median"], row["vs_full"]
        ttft = stats["ttft"]
        memory = med["peak_memory_bytes"]
        oom = f" ({row['oom_runs']} OOM)" if row["oom_runs"] else ""
        rows.append(common + [
            f"{ttft['median']:.3f} ({ttft['min']:.3f}-{ttft['max']:.3f}){oom}",
            _ratio(row["ttft_speedup"]),
            _ratio(row["ideal_ttft_speedup"]),
            _num(med["decode_tokens_per_s"], ".2f"),
            _num(med["latency"], ".3f"),
            _num(med["throughput"], ".2f"),
            "n/a" if memory is None else f"{memory / 2**30:.3f}",
            _ratio(vs["peak_memory_bytes"], ""),
        ])
    return rows


def overhead_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for row in results.get("overhead", []):
        if row.get("status") == "OOM":
            lines.append("Scoring + selection overhead: OOM")
            continue
        height, width = row["image_size"]
        lines.append(
            f"Scoring + selection overhead ({row['method']} at budget {budget_label(row)}, {width}x{height}, "
            f"batch {row['batch_size']}): plain ViT + projector {row['plain_vit_ms']:.1f} ms, with hooks + "
            f"selection {row['hooked_encode_ms']:.1f} ms: overhead {row['overhead_ms']:.1f} ms = "
            f"{100 * row['overhead_share']:.2f}% of ViT time (selection alone {row['selection_ms']:.1f} ms = "
            f"{100 * row['selection_share']:.2f}%)."
        )
    return lines


def header_lines(results: dict[str, Any]) -> list[str]:
    model, env, config = results["model"], results["environment"], results["config"]
    weights = f" (random weights, shapes of {model['shapes_of']})" if model["random_weights"] and model["shapes_of"] \
        else " (random weights)" if model["random_weights"] else ""
    v, t = model["vision"], model["text"]
    lines = [
        f"Model: {model['name']}{weights}; ViT {v['layers']} layers x {v['hidden']}, LLM {t['layers']} layers x "
        f"{t['hidden']}. Device: {env['device']} ({env['device_name']}), {env['dtype']}, {env['torch_threads']} "
        f"threads; torch {env['torch']}, transformers {env['transformers']}, hired {env['hired']}.",
        f"{config['new_tokens']} new tokens per sequence, median of {config['runs']} runs after {config['warmup']} "
        f"warm-up, arms interleaved; min-max in brackets. Memory: "
        f"{'CUDA max allocated' if env['device'].startswith('cuda') else 'peak RSS of the process (weights included)'}"
        ".",
    ]
    return lines + [f"Note: {note}" for note in results.get("notes", [])]


def markdown_table(results: dict[str, Any]) -> str:
    lines = header_lines(results) + [""] + markdown_rows(COLUMNS, table_rows(results))
    extra = overhead_lines(results)
    vit_shares = [r for r in results["results"] if r.get("vit_share_of_ttft") is not None]
    for r in vit_shares:
        extra.append(f"ViT + projector are {100 * r['vit_share_of_ttft']:.1f}% of the full model's TTFT "
                     f"({r['image_size'][1]}x{r['image_size'][0]}, batch {r['batch_size']}).")
    if extra:
        lines += [""] + extra
    lines += ["", f"Ideal speedup: {results['flops_convention']}."]
    return "\n".join(lines) + "\n"


def rich_table(results: dict[str, Any]):
    return draw_table("hired bench", COLUMNS, table_rows(results), left=("method", "image"))


def plot_speedup(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    groups: dict[tuple, list[dict]] = {}
    for row in results["results"]:
        if row["method"] == "full" or row["status"] == "OOM" or row["kept"] is None:
            continue
        size = "x".join(map(str, row["image_size"][::-1]))  # width x height, as pictures are named
        groups.setdefault((row["method"], size, row["batch_size"]), []).append(row)
    many = len({(s, b) for _, s, b in groups}) > 1
    for (method, size, batch), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["kept"] / r["total"])
        x = [100 * r["kept"] / r["total"] for r in rows]
        label = f"{method} {size} b={batch}" if many else method
        line = left.plot(x, [r["ttft_speedup"] for r in rows], marker="o", label=f"{label} measured")[0]
        left.plot(x, [r["ideal_ttft_speedup"] for r in rows], marker="x", linestyle="--", color=line.get_color(),
                  label=f"{label} ideal")
        memory = [r["vs_full"]["peak_memory_bytes"] for r in rows]
        right.plot(x, [None if m is None else 100 * m for m in memory], marker="o", label=label)
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set_xlabel("visual tokens kept (% of all partition tokens)")
    left.set_ylabel("TTFT speedup over the full model (x)")
    left.set_title("TTFT speedup: measured vs ideal (FLOPs)")
    right.axhline(100.0, color="grey", linewidth=0.8)
    right.set_xlabel("visual tokens kept (% of all partition tokens)")
    right.set_ylabel("peak memory (% of the full model)")
    right.set_title("Peak memory vs budget")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{results['model']['name']} on {results['environment']['device_name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    return write_result_files(results, out_dir, markdown_table, plot_speedup, "speedup.png")
