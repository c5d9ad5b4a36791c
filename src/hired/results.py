"""A command's results: ``results.json``, ``results.md`` and one PNG plot in one folder, its table
drawn the same way in markdown and on the terminal (bench and eval), and the progress bar of long
work (eval, data make)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_result_files(
    results: dict[str, Any],
    out_dir: str | Path,
    markdown: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], None],
    png_name: str,
) -> dict[str, Path]:
    """Write the three files; returns their paths under the keys ``json``, ``md`` and ``png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / png_name}
    paths["json"].write_text(json.dumps(results, indent=2, default=str))
    paths["md"].write_text(markdown(results))
    plot(results, paths["png"])
    return paths


def markdown_rows(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(cells) + " |" for cells in rows
    ]


def rich_table(title: str, columns: list[str], rows: list[list[str]], left: tuple[str, ...] = ("method",)):
    """The same table for the terminal (text columns in ``left`` flush left, numbers right)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), show_lines=False)  # Text: cells are shown as written, never as markup
    for column in columns:
        table.add_column(Text(column), justify="left" if column in left else "right")
    for cells in rows:
        table.add_row(*(Text(str(cell)) for cell in cells))
    return table


def progress_bar(enabled: bool = True):
    """A rich progress bar on stderr that vanishes when done; off where stderr is no terminal (a
    pipe or a log file gets no bar and no stray blank line)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(console=console, disable=not (enabled and console.is_terminal), transient=True)
