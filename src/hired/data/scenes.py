"""A seeded generator of high-resolution VQA scenes.

Each scene is a canvas of an aspect ratio that LLaVA-NeXT's grid handles (1:1, 2:1, 1:2, 3:1, 1:3)
with a cluttered background and a few small objects: shapes in colours, and squares holding a
letter drawn with the font that ships with Pillow. The objects are small enough that the
downsampled full view alone loses most of their detail (letters are unreadable there, shapes a few
pixels wide), so the sub-images matter, as in TextVQA or DocVQA. Questions have short one-word
answers (colour of a shape, shape of a colour, the letter inside a coloured square, how many of a
shape).

Everything is a pure function of ``(seed, index)``: scene ``index`` of a seed is the same whatever
``n`` is, and so is its split, so ``make_scenes(dir, 2000, 0)`` and ``make_scenes(dir, 5000, 0)``
agree on the scenes they share.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from hired.checks import at_least, output_folder
from hired.results import progress_bar

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 210, 20),
    "purple": (150, 40, 190),
    "orange": (245, 130, 15),
}
SHAPES = ("circle", "triangle", "square", "star", "diamond")
LETTERS = tuple("AEHKMPRTXZ")
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five")
KINDS = ("color", "shape", "letter", "count")
SPLITS = ("train", "val", "test")
# The resolutions (height, width) of the grid, in units of the crop size: what LLaVA-NeXT's
# pinpoints [[1,2],[2,1],[2,2],[3,1],[1,3]] x crop handle without padding.
GRID_UNITS = ((2, 2), (1, 2), (2, 1), (1, 3), (3, 1))
BASE_UNIT = 112  # the demo model's crop; canvases are 1.5x or 2x the grid resolution


@dataclass
class SceneObject:
    shape: str
    color: str
    cx: float
    cy: float
    size: float  # bounding box side in pixels
    letter: str | None = None

    @property
    def box(self) -> tuple[float, float, float, float]:
        h = self.size / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


def words() -> list[str]:
    """Every word of every question and answer the generator can write (for a word-level tokenizer)."""
    vocab = ["what", "color", "is", "the", "shape", "object", "which", "letter", "inside", "how", "many", "are",
             "there", "?"]
    vocab += list(COLORS) + list(SHAPES) + [s + "s" for s in SHAPES] + [c.lower() for c in LETTERS]
    vocab += list(COUNT_WORDS)
    return list(dict.fromkeys(vocab))


def split_of(seed: int, index: int) -> str:
    """train / val / test (80 / 10 / 10), fixed by (seed, index) alone."""
    digest = hashlib.sha256(f"hired-scenes:{seed}:{index}".encode()).digest()
    bucket = int.from_bytes(digest[:4], "big") % 10
    return "test" if bucket == 9 else "val" if bucket == 8 else "train"


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"hired-scene:{seed}:{index}".encode()).digest()[:8], "big"))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _background(rng: random.Random, width: int, height: int) -> Image.Image:
    """Muted gradient, grey blobs, lines and specks: clutter without the objects' saturated colours."""
    base = [rng.randint(90, 200) for _ in range(3)]
    grey = sum(base) // 3
    base = [int(0.6 * grey + 0.4 * b) for b in base]
    image = Image.new("RGB", (width, height), tuple(base))
    draw = ImageDraw.Draw(image)
    for _ in range(int(width * height / 900)):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(2, 14)
        v = max(0, min(255, grey + rng.randint(-70, 70)))
        tint = tuple(max(0, min(255, v + rng.randint(-15, 15))) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tint)
        else:
            draw.line((x, y, x + rng.uniform(-40, 40), y + rng.uniform(-40, 40)), fill=tint,
                      width=rng.randint(1, 3))
    return image


def _polygon(shape: str, obj: SceneObject) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = obj.box
    cx, cy, h = obj.cx, obj.cy, obj.size / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        points = []
        for k in range(10):
            r = h if k % 2 == 0 else h * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return points
    raise ValueError(shape)


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, fill) -> None:
    if obj.shape == "circle":
        draw.ellipse(obj.box, fill=fill)
    elif obj.shape == "square":
        draw.rectangle(obj.box, fill=fill)
    else:
        draw.polygon(_polygon(obj.shape, obj), fill=fill)


def _draw_letter(draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    font = _font(int(obj.size * 0.72))
    ink = (0, 0, 0) if obj.color in ("yellow", "orange", "green") else (255, 255, 255)
    stroke = max(1, round(obj.size / 28))  # bold strokes: legible in a sub-image, not in the full view
    draw.text((obj.cx, obj.cy), obj.letter, fill=ink, font=font, anchor="mm", stroke_width=stroke, stroke_fill=ink)


def _place(
    rng: random.Random, width: int, height: int, scales: list[float], unit: float
) -> list[tuple[float, float, float]]:
    """Non-overlapping (cx, cy, size) boxes, one per scale factor while room is found."""
    placed: list[tuple[float, float, float]] = []
    tries = 0
    while len(placed) < len(scales) and tries < 2000:
        tries += 1
        size = rng.uniform(0.19, 0.26) * unit * scales[len(placed)]
        margin = size / 2 + 2
        cx, cy = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
        if all(max(abs(cx - x), abs(cy - y)) > (size + s) / 2 + 4 for x, y, s in placed):
            placed.append((cx, cy, size))
    return placed


def _questions(objects: list[SceneObject], rng: random.Random) -> list[dict]:
    """Every unambiguous question of each kind, then at most one per kind, chosen at random."""
    by_shape: dict[str, list[SceneObject]] = {}
    by_color: dict[str, list[SceneObject]] = {}
    for o in objects:
        by_shape.setdefault(o.shape, []).append(o)
        by_color.setdefault(o.color, []).append(o)
    options: dict[str, list[tuple[str, str]]] = {k: [] for k in KINDS}
    for shape, items in by_shape.items():
        if len(items) == 1:
            options["color"].append((f"what color is the {shape}?", items[0].color))
    for color, items in by_color.items():
        if len(items) == 1:
            options["shape"].append((f"what shape is the {color} object?", items[0].shape))
        squares = [o for o in items if o.shape == "square"]
        if len(squares) == 1:
            options["letter"].append((f"which letter is inside the {color} square?", squares[0].letter.lower()))
    for shape in SHAPES:
        count = len(by_shape.get(shape, []))
        if 1 <= count <= 3:
            options["count"].append((f"how many {shape}s are there?", COUNT_WORDS[count]))
    out = []
    for kind in KINDS:
        if options[kind]:
            question, answer = rng.choice(options[kind])
            out.append({"question": question, "answer": answer, "kind": kind})
    return out


def generate_scene(seed: int, index: int = 0) -> tuple[Image.Image, list[dict], list[SceneObject]]:
    """Scene ``index`` of ``seed``: (picture, questions, objects drawn). Each question is a dict with
    ``question``, ``answer`` and ``kind``."""
    rng = _rng(seed, index)
    rows, cols = rng.choice(GRID_UNITS)
    scale = rng.choice((1.5, 2.0))
    unit = BASE_UNIT * scale
    width, height = int(cols * unit), int(rows * unit)
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    count = min(rng.randint(4, 7) + (rows * cols - 2) // 2, 9)
    objects = []
    palette = list(COLORS)
    # Shapes drawn from a skewed pool so that counts of one to three all occur; squares hold a
    # letter and are drawn larger so that the letter is legible in a sub-image.
    shapes = [rng.choice(SHAPES + ("circle", "triangle", "square")) for _ in range(count)]
    boxes = _place(rng, width, height, [1.35 if shape == "square" else 1.0 for shape in shapes], unit)
    for shape, (cx, cy, size) in zip(shapes, boxes):
        obj = SceneObject(shape, rng.choice(palette), cx, cy, size)
        if shape == "square":
            obj.letter = rng.choice(LETTERS)
        objects.append(obj)
    for obj in objects:
        _draw_object(draw, obj, COLORS[obj.color])
        if obj.letter:
            _draw_letter(draw, obj)
    return image, _questions(objects, rng), objects


def scene(seed: int, index: int = 0) -> tuple[Image.Image, list[dict]]:
    """(PIL image, list of QA dicts) of one scene: the single-scene entry point for tests."""
    image, qas, _ = generate_scene(seed, index)
    return image, qas


def scene_records(seed: int, index: int) -> tuple[Image.Image, list[dict]]:
    """The picture and its JSONL records (without the ``image`` path)."""
    image, qas, _ = generate_scene(seed, index)
    records = [
        {"id": f"s{seed}-{index:06d}-{k}", "question": qa["question"], "answer": qa["answer"], "kind": qa["kind"],
         "width": image.width, "height": image.height}
        for k, qa in enumerate(qas)
    ]
    return image, records


def make_scenes(out_dir: str | Path, n: int, seed: int = 0, progress: bool = False) -> dict[str, Path]:
    """Write ``n`` scenes: ``out_dir/images/*.png`` and ``train.jsonl``, ``val.jsonl``, ``test.jsonl``.
    Returns {split: path of its JSONL}."""

    at_least(n, 1, "n")
    at_least(seed, 0, "seed")
    out = output_folder(out_dir)
    output_folder(out / "images", "--out's images/")
    paths = {split: out / f"{split}.jsonl" for split in SPLITS}
    files = {split: open(path, "w", encoding="utf-8") for split, path in paths.items()}
    try:
        with progress_bar(progress) as bar:
            for index in bar.track(range(n), description="scenes"):
                image, records = scene_records(seed, index)
                name = f"images/s{seed}-{index:06d}.png"
                image.save(out / name, optimize=False, compress_level=6)
                split = split_of(seed, index)
                for record in records:
                    record = {"id": record["id"], "image": name, **{k: v for k, v in record.items() if k != "id"}}
                    files[split].write(json.dumps(record) + "\n")
    finally:
        for f in files.values():
            f.close()
    return paths


SAMPLE = Path(__file__).resolve().parent / "sample.json"


def sample_scene() -> tuple[Path, str, str]:
    """(image path, question, answer) of the scene shipped in the package: what `hired run` asks
    about when given no --image and no --prompt."""
    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    return SAMPLE.parent / sample["image"], sample["question"], sample["answer"]
