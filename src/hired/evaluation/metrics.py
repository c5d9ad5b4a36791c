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
# A number as written: sign, digits with optional thousands commas, decimals, exponent ("2.0", "-1,000", "1e3").
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w]|\.\d)")


def canonical_number(match: re.Match) -> str:
    """A number's one spelling: "2.0", "2" and "+2" are "2"; "1,000" is "1000"; "0.50" is "0.5"
    (a decimal point is kept inside the word, not turned into a space by the punctuation rule)."""
    text = match.group(0).replace(",", "")
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return text
    if value != value or value in (float("inf"), float("-inf")):
        return text
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value).replace(".", "\x00")  # protected from the punctuation rule, restored below


def normalize_answer(text: str) -> str:
    """Lowercase, read numbers as numbers ("2.0" is "2"), strip punctuation and articles, spell
    number words as digits, squeeze spaces."""
    text = NUMBER.sub(canonical_number, str(text).lower())
    words = PUNCTUATION.sub(" ", text).replace("\x00", ".").split()
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
