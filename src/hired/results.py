"""Writing a command's results: ``results.json``, ``results.md`` and one PNG plot, in one folder."""

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
