"""Reading VQA-style items: JSONL rows with an image path, a question and its answer(s)."""

from __future__ import annotations

import json
from pathlib import Path

from hired.errors import HiREDError


def load_items(source: str | Path, split: str = "test", limit: int | None = None) -> list[dict]:
    """Items of a JSONL file, or of ``DIR/{split}.jsonl``. Image paths are made absolute
    (relative ones are read from the JSONL's folder). Each item needs id, image, question and
    answer (or answers)."""
    path = Path(source)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise HiREDError(f"no evaluation data at {path}: give a JSONL file or a folder with {split}.jsonl")
    items = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise HiREDError(f"{path}:{number} is not valid JSON ({error.msg})") from None
            missing = [k for k in ("image", "question") if k not in item]
            if "answer" not in item and "answers" not in item:
                missing.append("answer")
            if missing:
                raise HiREDError(f"{path}:{number} lacks {', '.join(missing)}")
            item.setdefault("id", f"{path.stem}-{number}")
            item["id"] = str(item["id"])
            item["image"] = str((path.parent / item["image"]).resolve())
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise HiREDError(f"{path} holds no items")
    return items
