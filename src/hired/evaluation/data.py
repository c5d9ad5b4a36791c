"""Reading VQA-style items: JSONL rows with an image path, a question and its answer(s)."""

from __future__ import annotations

import json
from pathlib import Path

from hired.checks import at_least
from hired.errors import DataError


def is_answer(value: object) -> bool:
    """A reference answer: a non-empty string, or a number (read as its text)."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_item(item: object, where: str) -> str | None:
    """What is wrong with one JSONL item, or None."""
    if not isinstance(item, dict):
        return f"{where} is not a JSON object"
    missing = [k for k in ("image", "question") if k not in item]
    if "answer" not in item and "answers" not in item:
        missing.append("answer")
    if missing:
        return f"{where} lacks {', '.join(missing)}"
    for key in ("image", "question"):
        if not isinstance(item[key], str) or not item[key].strip():
            return f"{where}: {key} must be a non-empty string"
    answers = item["answers"] if "answers" in item else [item["answer"]]
    if not isinstance(answers, list) or not answers or not all(is_answer(a) for a in answers):
        key = "answers" if "answers" in item else "answer"
        return f"{where}: {key} must be {'a non-empty list of ' if key == 'answers' else 'a '}non-empty string" \
               f"{'s' if key == 'answers' else ''}, got {item[key]!r}"
    if "kind" in item and (not isinstance(item["kind"], str) or not item["kind"].strip()):
        return f"{where}: kind must be a non-empty string (the question's kind, e.g. 'color'), got {item['kind']!r}"
    if "id" in item and (isinstance(item["id"], bool) or not isinstance(item["id"], (str, int))):
        return f"{where}: id must be a string or an integer, got {item['id']!r}"
    return None


def load_items(source: str | Path, split: str = "test", limit: int | None = None) -> list[dict]:
    """Items of a JSONL file, or of ``DIR/{split}.jsonl``. Image paths are made absolute
    (relative ones are read from the JSONL's folder). Each item needs image, question and answer
    (or a non-empty list of answers); ids (default: the file's stem and line number) must not
    repeat, and every image file must exist. Raises DataError naming the first problem."""
    if limit is not None:
        at_least(limit, 1, "limit")
    path = Path(source)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"no evaluation data at {path}: give a JSONL file or a folder with {split}.jsonl")
    items: list[dict] = []
    first_line: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{number} is not valid JSON ({error.msg})") from None
                problem = check_item(item, f"{path}:{number}")
                if problem:
                    raise DataError(problem)
                item = {**item, "id": str(item.get("id", f"{path.stem}-{number}"))}
                if item["id"] in first_line:
                    raise DataError(f"{path}:{number} repeats id {item['id']!r} of line {first_line[item['id']]}; "
                                    f"ids must be unique")
                first_line[item["id"]] = number
                image = (path.parent / item["image"]).resolve()
                if not image.is_file():
                    raise DataError(f"{path}:{number}: image file not found: {image}")
                item["image"] = str(image)
                if "answers" in item:
                    item["answers"] = [str(a) for a in item["answers"]]
                else:
                    item["answer"] = str(item["answer"])
                items.append(item)
                if limit is not None and len(items) >= limit:
                    break
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a JSONL text file (not UTF-8); give the JSONL of questions") from None
    if not items:
        raise DataError(f"{path} holds no items")
    return items
