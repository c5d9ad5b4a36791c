"""`hired eval`: accuracy per method and budget, resumable (answers cached per item)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

import hired
from hired.checks import at_least, output_folder
from hired.errors import DataError
from hired.evaluation.metrics import confidence_interval, normalize_answer, score
from hired.experiments import Arm
from hired.images import load_image
from hired.loading import LoadedModel
from hired.results import progress_bar

CACHE_VERSION = 2  # cached rows carry the fingerprint of the item they answer


def item_key(item: dict) -> str:
    """Fingerprint of what the model is asked: the question and the image file's bytes. A cached
    answer is reused only for the same fingerprint, so another --data into the same --out, whose
    ids collide, is caught."""
    digest = hashlib.sha1(item["question"].encode("utf-8"))
    with open(item["image"], "rb") as f:
        digest.update(hashlib.sha1(f.read()).digest())
    return digest.hexdigest()


def read_cache(path: Path, keys: dict[str, str]) -> dict[str, dict]:
    """Cached answers of ``path`` by item id; DataError where one answers another item of the same
    id (``keys``: fingerprint per item id) than the data given now."""
    if not path.is_file():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interrupted run
            continue
        if row["id"] in keys and row.get("key") != keys[row["id"]]:
            raise DataError(f"{path.parent.parent} holds a cached answer for id {row['id']!r} of another question or "
                            f"image (other --data?); pass another --out or delete it")
        rows[row["id"]] = row
    return rows


def check_run_settings(out: Path, settings: dict[str, Any]) -> None:
    """Cached answers are only reused by a run with the same model and generation settings:
    ``out/settings.json`` records them, and a different run into the same folder is refused."""
    path = out / "settings.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{path} is not the settings file of a hired eval run; pass another --out") from None
        changed = {k: (cached.get(k), v) for k, v in settings.items() if cached.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise DataError(f"{out} holds cached answers of another run ({what}); pass another --out or delete it")
    output_folder(out)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def answer_batch(loaded: LoadedModel, batch: list[dict], max_new_tokens: int, keys: dict[str, str]) -> list[dict]:
    """Generate answers for a batch of items; with HiRED applied, also what was kept."""
    model, processor = loaded.model, loaded.processor
    images = [load_image(item["image"]) for item in batch]
    inputs = loaded.inputs(images, [loaded.format_prompt(item["question"]) for item in batch], padding=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    texts = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    report = getattr(model, "hired_report", None)
    rows = []
    for i, (item, text) in enumerate(zip(batch, texts)):
        row = {"id": item["id"], "key": keys[item["id"]], "prediction": text.strip()}
        if report is not None:
            row["kept"], row["total"] = report.images[i].kept, report.images[i].total
        rows.append(row)
    return rows


def majority_baselines(items: list[dict]) -> dict[str, float]:
    """Accuracy of always giving the most common answer, overall and per question kind."""
    answers = [normalize_answer(item.get("answer") or item["answers"][0]) for item in items]
    overall = Counter(answers).most_common(1)[0][1] / len(items)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for item, answer in zip(items, answers):
        by_kind[item.get("kind", "all")][answer] += 1
    per_kind = sum(c.most_common(1)[0][1] for c in by_kind.values()) / len(items)
    return {"majority": overall, "majority_per_kind": per_kind}


def summarize(arm: Arm, items: list[dict], rows: dict[str, dict]) -> dict[str, Any]:
    scores = [score(rows[item["id"]]["prediction"], item) for item in items]
    by_kind: dict[str, list[float]] = defaultdict(list)
    for item, s in zip(items, scores):
        by_kind[item.get("kind", "all")].append(s)
    kept = [rows[item["id"]].get("kept") for item in items]
    total = [rows[item["id"]].get("total") for item in items]
    low, high = confidence_interval(scores)
    return {
        "arm": arm.key,
        "method": arm.method,
        "budget": arm.budget,
        "adaptive": arm.adaptive,
        "n": len(scores),
        "accuracy": sum(scores) / len(scores),
        "ci95": [low, high],
        "by_kind": {kind: sum(v) / len(v) for kind, v in sorted(by_kind.items())},
        "mean_kept": None if None in kept else sum(kept) / len(kept),
        "mean_total": None if None in total else sum(total) / len(total),
    }


def evaluate(
    loaded: LoadedModel,
    items: list[dict],
    arms: list[Arm],
    out_dir: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    alpha: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Answer every item under every arm (skipping answers already cached in ``out_dir``)."""

    at_least(batch_size, 1, "batch_size")
    at_least(max_new_tokens, 1, "max_new_tokens")
    out = Path(out_dir)
    check_run_settings(out, {"model": loaded.name, "max_new_tokens": max_new_tokens, "alpha": alpha, "seed": seed,
                             "cache_version": CACHE_VERSION})
    output_folder(out / "answers")
    keys = {item["id"]: item_key(item) for item in items}
    summaries = []
    todo_total = 0
    caches = {}
    for arm in arms:
        caches[arm.key] = read_cache(out / "answers" / f"{arm.key}.jsonl", keys)
        todo_total += sum(item["id"] not in caches[arm.key] for item in items)
    with progress_bar(progress) as bar:
        task = bar.add_task("answering", total=todo_total)
        for arm in arms:
            config = arm.config(alpha, seed)
            if config is None:
                hired.remove(loaded.model)
            else:
                hired.apply(loaded.model, config)
            rows = caches[arm.key]
            todo = [item for item in items if item["id"] not in rows]
            bar.update(task, description=escape(f"answering [{arm.key}]"))  # shown as written, not as markup
            with (out / "answers" / f"{arm.key}.jsonl").open("a") as cache:
                for start in range(0, len(todo), batch_size):
                    for row in answer_batch(loaded, todo[start : start + batch_size], max_new_tokens, keys):
                        rows[row["id"]] = row
                        cache.write(json.dumps(row) + "\n")
                    cache.flush()
                    bar.advance(task, len(todo[start : start + batch_size]))
            summaries.append(summarize(arm, items, rows))
    hired.remove(loaded.model)
    return {"model": loaded.name, "random_weights": loaded.random_weights, "n_items": len(items),
            **majority_baselines(items), "results": summaries}
