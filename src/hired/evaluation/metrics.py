"""Answer normalization, exact match, VQA accuracy and confidence intervals."""

from __future__ import annotations

import math
import re
import string

NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lowercase, strip punctuation and articles, spell numbers as digits, squeeze spaces."""
    words = PUNCTUATION.sub(" ", text.lower()).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words if w not in ARTICLES)


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQAv2's accuracy: min(1, matching references / 3), averaged over the leave-one-out
    subsets of the references (10 references in VQAv2)."""
    pred = normalize_answer(prediction)
    refs = [normalize_answer(a) for a in answers]
    if len(refs) == 1:
        return float(pred == refs[0])
    scores = []
    for i in range(len(refs)):
        matches = sum(pred == r for j, r in enumerate(refs) if j != i)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def score(prediction: str, item: dict) -> float:
    """Exact match against ``answer``, or VQA accuracy when several ``answers`` are given."""
    answers = item.get("answers")
    if answers and len(answers) > 1:
        return vqa_accuracy(prediction, answers)
    return exact_match(prediction, answers[0] if answers else item["answer"])


def confidence_interval(scores: list[float], z: float = 1.96) -> tuple[float, float]:
    """95% interval of the mean: Wilson's for 0/1 scores, the normal one otherwise."""
    n = len(scores)
    if n == 0:
        return (float("nan"), float("nan"))
    mean = sum(scores) / n
    if all(s in (0.0, 1.0) for s in scores):
        denom = 1 + z * z / n
        centre = (mean + z * z / (2 * n)) / denom
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denom
        return (max(0.0, centre - half), min(1.0, centre + half))
    var = sum((s - mean) ** 2 for s in scores) / max(1, n - 1)
    half = z * math.sqrt(var / n)
    return (max(0.0, mean - half), min(1.0, mean + half))
