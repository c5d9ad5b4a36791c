"""The seeded VQA scene generator: determinism, fixed split, answers true to the drawing, JSONL schema."""

import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from hired.cli import app
from hired.data import make_scenes, scene, split_of
from hired.data import scenes as S

PINPOINT_ASPECTS = {1.0, 2.0, 0.5, 3.0, 1 / 3}


def test_a_scene_is_a_function_of_its_seed_and_index():
    a_image, a_qas = scene(7, 3)
    b_image, b_qas = scene(7, 3)
    assert a_qas == b_qas and np.array_equal(np.asarray(a_image), np.asarray(b_image))
    c_image, c_qas = scene(8, 3)
    assert c_qas != a_qas or not np.array_equal(np.asarray(c_image), np.asarray(a_image))


def test_split_is_fixed_by_seed_and_index_and_roughly_80_10_10():
    splits = Counter(split_of(0, i) for i in range(2000))
    assert set(splits) == {"train", "val", "test"}
    assert 0.75 < splits["train"] / 2000 < 0.85 and 0.07 < splits["test"] / 2000 < 0.13
    assert [split_of(0, i) for i in range(50)] == [split_of(0, i) for i in range(50)]
    assert [split_of(0, i) for i in range(200)] != [split_of(1, i) for i in range(200)]


def test_canvases_have_the_grid_aspect_ratios_and_objects_are_small():
    aspects = set()
    for index in range(40):
        image, qas, objects = S.generate_scene(0, index)
        aspects.add(round(image.width / image.height, 3))
        assert min(image.size) >= 168 and max(image.size) >= 336
        assert 3 <= len(objects) <= 9 and qas
        for obj in objects:
            # An object covers a few percent of the canvas at most, and once the picture is squashed
            # into the 112 px full view it is at most ~15 px along the long side (a lettered square
            # ~20 px, its letter ~14 px in thin strokes), while a sub-image shows it at twice that.
            large = 1.35 if obj.letter else 1.0
            assert obj.size**2 < 0.035 * large**2 * image.width * image.height
            assert obj.size <= 0.27 * large * min(image.size)
            assert obj.size * S.BASE_UNIT / max(image.size) <= 15 * large
    assert aspects == {round(a, 3) for a in PINPOINT_ASPECTS}


def test_answers_agree_with_what_was_drawn():
    kinds = Counter()
    for index in range(60):
        image, qas, objects = S.generate_scene(3, index)
        pixels = np.asarray(image)
        for obj in objects:  # the colour really is at the object's centre (letters aside)
            if obj.letter is None and obj.shape != "star":
                centre = pixels[int(obj.cy), int(obj.cx)]
                assert np.abs(centre.astype(int) - S.COLORS[obj.color]).max() <= 2
        for qa in qas:
            kinds[qa["kind"]] += 1
            words = qa["question"].rstrip("?").split()
            if qa["kind"] == "color":
                [obj] = [o for o in objects if o.shape == words[-1]]
                assert qa["answer"] == obj.color
            elif qa["kind"] == "shape":
                [obj] = [o for o in objects if o.color == words[-2]]
                assert qa["answer"] == obj.shape
            elif qa["kind"] == "letter":
                [obj] = [o for o in objects if o.color == words[-2] and o.shape == "square"]
                assert qa["answer"] == obj.letter.lower()
            else:
                shape = words[2][:-1]
                assert qa["answer"] == S.COUNT_WORDS[sum(o.shape == shape for o in objects)]
    assert set(kinds) == set(S.KINDS)


def test_every_word_is_in_the_vocabulary():
    vocab = set(S.words())
    for index in range(100):
        for qa in scene(0, index)[1]:
            assert set(qa["question"].replace("?", " ?").split()) <= vocab
            assert qa["answer"] in vocab and " " not in qa["answer"] and qa["answer"] == qa["answer"].lower()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    return out, make_scenes(out, 30, seed=0)


def test_make_scenes_writes_pngs_and_jsonl_of_the_schema(written):
    out, paths = written
    assert set(paths) == {"train", "val", "test"}
    records = {split: [json.loads(line) for line in open(path)] for split, path in paths.items()}
    assert all(records.values())
    ids = set()
    for split, rows in records.items():
        for row in rows:
            assert set(row) == {"id", "image", "question", "answer", "kind", "width", "height"}
            assert row["kind"] in S.KINDS and row["id"] not in ids
            ids.add(row["id"])
            index = int(row["image"].split("-")[1].split(".")[0])
            assert split_of(0, index) == split
            from PIL import Image

            with Image.open(out / row["image"]) as image:
                assert image.size == (row["width"], row["height"])
    assert len(list((out / "images").glob("*.png"))) == 30


def test_more_scenes_keep_the_same_first_scenes(written, tmp_path):
    _, paths = written
    bigger = make_scenes(tmp_path, 35, seed=0)
    small = [line for line in open(paths["test"])]
    large = [line for line in open(bigger["test"])]
    assert large[: len(small)] == small


def test_data_make_command(tmp_path):
    result = CliRunner().invoke(app, ["data", "make", "--out", str(tmp_path), "--n", "12", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "train.jsonl").exists() and (tmp_path / "test.jsonl").exists()
    assert len(list((tmp_path / "images").glob("*.png"))) == 12
