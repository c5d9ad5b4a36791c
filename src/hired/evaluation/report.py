"""Writing evaluation results: results.json, results.md, accuracy.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hired.experiments import budget_label
from hired.results import markdown_rows, write_result_files
from hired.results import rich_table as draw_table

COLUMNS = ["method", "budget", "kept tokens (mean)", "accuracy %", "95% CI", "n"]


def header_line(results: dict[str, Any]) -> str:
    return (f"Model: {results['model']}{' (random weights)' if results['random_weights'] else ''}; "
            f"{results['n_items']} questions. Majority-answer baseline: {100 * results['majority']:.1f}% "
            f"(per question kind: {100 * results['majority_per_kind']:.1f}%).")


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in results["results"]:
        kept = "all" if row["mean_kept"] is None else f"{row['mean_kept']:.0f} / {row['mean_total']:.0f}"
        low, high = row["ci95"]
        rows.append([row["method"], budget_label(row), kept, f"{100 * row['accuracy']:.1f}",
                     f"{100 * low:.1f}-{100 * high:.1f}", str(row["n"])])
    return rows


def markdown_table(results: dict[str, Any]) -> str:
    return "\n".join([header_line(results), "", *markdown_rows(COLUMNS, table_rows(results))]) + "\n"


def rich_table(results: dict[str, Any]):
    return draw_table("hired eval", COLUMNS, table_rows(results))


def kept_share(row: dict[str, Any]) -> float:
    """Share of partition tokens an arm really kept (adaptive methods ignore the budget)."""
    if row.get("mean_kept") is not None and row.get("mean_total"):
        return row["mean_kept"] / row["mean_total"]
    return row["budget"]


def plot_accuracy(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    by_method: dict[str, list[dict]] = {}
    for row in results["results"]:
        if row["budget"] is None:
            ax.axhline(100 * row["accuracy"], color="black", linestyle="--", label=f"{row['method']} (all tokens)")
        elif isinstance(row["budget"], float) or row.get("mean_kept") is not None:  # counts too: x is the share kept
            by_method.setdefault(row["method"], []).append(row)
    for method, rows in by_method.items():
        rows = sorted(rows, key=kept_share)
        x = [100 * kept_share(r) for r in rows]
        y = [100 * r["accuracy"] for r in rows]
        err = [[100 * (r["accuracy"] - r["ci95"][0]) for r in rows],
               [100 * (r["ci95"][1] - r["accuracy"]) for r in rows]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
    ax.axhline(100 * results["majority"], color="grey", linestyle=":", label="majority answer")
    ax.set_xlabel("visual tokens kept (% of all partition tokens)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Accuracy vs budget: {results['model']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    return write_result_files(results, out_dir, markdown_table, plot_accuracy, "accuracy.png")
