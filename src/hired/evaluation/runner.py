"""`hired eval`: accuracy per method and budget, resumable (answers cached per item)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
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

CACHE_VERSION = 3  # cached rows carry the fingerprint of the item they answer; settings.json the dtype


def item_key(item: dict) -> str:
    """Fingerprint of what the model is asked: the question and the image file's bytes. A cached
    answer is reused only for the same fingerprint, so another --data into the same --out, whose
    ids collide, is caught."""
    digest = hashlib.sha1(item["question"].encode("utf-8"))
    with open(item["image"], "rb") as f:
        digest.update(hashlib.sha1(f.read()).digest())
    return digest.hexdigest()


def is_cached_row(row: Any) -> bool:
    """A line hired eval wrote: an object with a string id, key and prediction (kept counts, where
    given, integers)."""
    return (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("id", "key", "prediction"))
            and all(isinstance(row.get(k, 0), int) for k in ("kept", "total")))


def read_cache(path: Path, keys: dict[str, str], log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Cached answers of ``path`` by item id; DataError where one answers another item of the same
    id (``keys``: fingerprint per item id) than the data given now. Lines that are not answers
    hired wrote (cut short by an interrupted run, edited, of another shape or encoding) are not
    trusted: they are answered again, with a note through ``log``, and dropped from the file."""
    if not path.is_file():
        return {}
    rows = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError):
        lines = ["\x00"]  # unreadable as a whole: nothing of it is trusted
    skipped = 0
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not is_cached_row(row):
            skipped += bool(line.strip())
            continue
        if row["id"] in keys and row.get("key") != keys[row["id"]]:
            raise DataError(f"{path.parent.parent} holds a cached answer for id {row['id']!r} of another question or "
                            f"image (other --data?); pass another --out or delete it")
        rows[row["id"]] = row
    if skipped:  # keep what is trusted, so that new answers are not appended to lines no one can read
        path.write_text("".join(json.dumps(row) + "\n" for row in rows.values()), encoding="utf-8")
    if skipped and log is not None:
        log(f"{path}: {skipped} line{'s' if skipped > 1 else ''} that {'are' if skipped > 1 else 'is'} not a cached "
            f"answer (cut short or edited) ignored; {'those' if skipped > 1 else 'that'} will be answered again")
    return rows


def check_run_settings(out: Path, settings: dict[str, Any]) -> None:
    """Cached answers are only reused by a run with the same model and generation settings:
    ``out/settings.json`` records them, and a different run into the same folder is refused."""
    path = out / "settings.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            cached = None
        if not isinstance(cached, dict):
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
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Answer every item under every arm (skipping answers already cached in ``out_dir``, when
    they were generated with the same model, dtype, device type and generation settings)."""

    at_least(batch_size, 1, "batch_size")
    at_least(max_new_tokens, 1, "max_new_tokens")
    out = Path(out_dir)
    check_run_settings(out, {"model": loaded.name, "dtype": str(loaded.model.dtype).removeprefix("torch."),
                             "device": loaded.model.device.type, "max_new_tokens": max_new_tokens, "alpha": alpha,
                             "seed": seed, "cache_version": CACHE_VERSION})
    output_folder(out / "answers")
    keys = {item["id"]: item_key(item) for item in items}
    summaries = []
    todo_total = 0
    caches = {}
    for arm in arms:
        caches[arm.key] = read_cache(out / "answers" / f"{arm.key}.jsonl", keys, log)
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
