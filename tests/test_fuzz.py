"""Classes of input, seeded: any picture a user can open gives a correct result or one clear line;
any command-line value out of range gives exit code 2 and one line on stderr, never a traceback;
every misuse of the API raises a typed HiREDError subclass.

Pictures: sizes and aspect ratios up to 100:1 and beyond (through the API on the tiny models of
real geometry, and through `hired run` on the demo model), pixel modes and bit depths, EXIF
orientation, corrupt and truncated files, decompression bombs, NaN pixels.
"""

import json
import random
import re

import numpy as np
import pytest
import torch
from conftest import noise_image
from PIL import Image, ImageOps
from typer.testing import CliRunner

import hired
import hired.loading
from hired.cli import app
from hired.data.scenes import sample_scene
from hired.errors import (
    ConfigError,
    DataError,
    ImageLoadError,
    ImageTokenMismatchError,
    InputError,
    ModelLoadError,
    OptionError,
    UnsupportedModelError,
)
from hired.evaluation.data import load_items
from hired.families import FAMILIES
from hired.images import load_image
from hired.presets import record_of

runner = CliRunner()
RNG = random.Random(14)
# (height, width): the extremes named in issue 14, then seeded draws of aspect ratios up to 100:1.
EXTREME_SIZES = [(200, 20000), (20000, 200), (2, 3000), (3000, 2), (1, 1), (1, 100), (100, 1)]
DRAWN_SIZES = [
    (max(1, round(side / ratio ** 0.5)), max(1, round(side * ratio ** 0.5)))
    for side, ratio in ((RNG.randint(20, 900), 10 ** RNG.uniform(-2, 2)) for _ in range(6))
]
FIXED = ["hired", "random", "spatial", "visionzip", "prumerge+-fixed"]


# -- pictures of any size through the API ----------------------------------------------------
def image_inputs(processor, height, width, seed=0, family="llava_next", image=None):
    image = noise_image(height, width, seed) if image is None else image
    return processor(images=image, text=record_of(family).prompt("what is it"), return_tensors="pt")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_any_aspect_ratio_keeps_the_exact_budget_and_parity_at_full_budget(family, tiny_models):
    model, processor = tiny_models[family]
    try:
        sizes = EXTREME_SIZES + DRAWN_SIZES
        if family == "llava":  # its processor scales the short side to 336 px: 3000 x 2 would be 504000 x 336
            sizes = [(h, w) for h, w in sizes if max(h, w) / min(h, w) <= 100 and max(h, w) <= 2000]
        if family.startswith("qwen"):  # native resolution: smart_resize refuses ratios over 200, and a 4 Mpx
            # picture is 20k ViT tokens (minutes on CPU): the same ratios at a tenth of the side
            sizes = [(h, w) if h * w <= 10**6 else (max(1, h // 10), max(1, w // 10))
                     for h, w in sizes if max(h, w) / min(h, w) <= 200]
        for i, (height, width) in enumerate(sizes):
            # a PIL image, or (InternVL, whose grid hired derives from the size) an array every other time:
            # a 1 x 100 RGB array is ambiguous to transformers, which must not transpose hired's grid
            image = noise_image(height, width, seed=i)
            if family == "internvl" and i % 2:
                image = np.asarray(image)
            inputs = image_inputs(processor, height, width, family=family, image=image)
            hired.remove(model)
            with torch.no_grad():
                reference = model(**inputs).logits[0, -1]
            hired.apply(model, hired.HiREDConfig(budget=1.0))
            with torch.no_grad():
                full = model(**inputs).logits[0, -1]
            report = model.hired_report.images[0]
            assert report.llm_tokens == report.llm_tokens_full, (height, width)
            torch.testing.assert_close(full, reference, atol=1e-4, rtol=1e-4)
            method = FIXED[i % len(FIXED)]
            config = hired.HiREDConfig(budget=0.2, method=method)
            if family == "llava_onevision" and method in ("visionzip", "prumerge+-fixed"):
                config = hired.HiREDConfig(budget=0.2, method="hired+")  # merging: refused where it downsamples
            hired.apply(model, config)
            with torch.no_grad():
                model(**inputs)
            report = model.hired_report.images[0]
            valid = int(report.valid.sum())
            assert report.kept == min(config.budget_tokens(report.budget_total or report.total), valid), \
                (height, width, method)
            assert int((report.keep_mask & ~report.valid).sum()) == 0
            unambiguous = isinstance(image, Image.Image) or min(height, width) > 4  # a 1 x 100 x 3 array is not
            if family == "internvl" and report.grid != (1, 1) and unambiguous:  # the grid follows the orientation
                rows, cols = report.grid
                assert (rows >= cols) == (height >= width) or rows == cols, (height, width, report.grid)
    finally:
        hired.remove(model)


def test_a_picture_whose_sub_images_unpadding_empties_spends_the_budget_on_the_full_view(tiny_next):
    model, processor = tiny_next
    try:
        hired.apply(model, hired.HiREDConfig(budget=0.2))
        with torch.no_grad():
            model(**image_inputs(processor, 200, 20000))
        report = model.hired_report.images[0]
        assert report.partition_budgets[0] == report.budget and sum(report.partition_budgets[1:]) == 0
        assert report.kept == report.budget
    finally:
        hired.remove(model)


@pytest.mark.parametrize("size", ["20000x200", "200x20000", "3000x2", "2x3000", "100x1"])
def test_hired_run_on_the_demo_model_takes_extreme_aspect_ratios(tmp_path, size):
    width, height = (int(v) for v in size.split("x"))
    path = tmp_path / f"{size}.png"
    noise_image(height, width).save(path)
    for budget in ("1.0", "0.2"):
        result = runner.invoke(app, ["run", "-i", str(path), "-p", "what color is the star?", "--budget", budget,
                                     "--max-new-tokens", "2", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout.strip().splitlines()[-1])
        if budget == "1.0":
            assert data["llm_image_tokens"] == data["llm_image_tokens_full"]
        else:
            assert data["kept"] == round(0.2 * data["total"])


def test_viz_eval_and_bench_take_extreme_aspect_ratios(tmp_path):
    picture = tmp_path / "wide.png"
    noise_image(200, 20000).save(picture)
    viz = runner.invoke(app, ["viz", "-i", str(picture), "--out", str(tmp_path / "kept.png"), "--methods",
                              "hired,visionzip,prumerge+,spatial"])
    assert viz.exit_code == 0, viz.output
    assert "hired: kept 51/256, per partition [51, 0, 0, 0]" in viz.stdout
    data = tmp_path / "wide.jsonl"
    data.write_text(json.dumps({"id": "w", "image": "wide.png", "question": "what color is the star?",
                                "answer": "red"}) + "\n")
    ev = runner.invoke(app, ["eval", "--data", str(data), "--out", str(tmp_path / "ev"), "--methods", "hired",
                             "--budgets", "0.2", "--max-new-tokens", "1"])
    assert ev.exit_code == 0, ev.output
    rows = json.loads((tmp_path / "ev" / "results.json").read_text())["results"]
    assert rows[1]["mean_kept"] == 51 and rows[1]["mean_total"] == 256
    bench = runner.invoke(app, ["bench", "--image", "16000x100", "--runs", "1", "--warmup", "0", "--new-tokens", "1",
                                "--budgets", "1.0,0.2", "--methods", "full,hired", "--no-progress",
                                "--out", str(tmp_path / "bench")])
    assert bench.exit_code == 0, bench.output
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["results"]
    assert [row["kept"] for row in rows] == [576, 576, round(0.2 * rows[0]["total"])]


# -- picture files: modes, bit depths, EXIF, corrupt, bombs ------------------------------------
def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_modes_convert_as_transformers_does(tmp_path):
    size = (40, 30)
    white = (255, 255, 255)
    cases = {
        "1.png": (Image.new("1", size, 1), white),
        "l.png": (Image.new("L", size, 77), (77, 77, 77)),
        "la.png": (Image.new("LA", size, (0, 0)), white),  # transparent black -> white
        "rgba.png": (Image.new("RGBA", size, (255, 0, 0, 0)), white),
        "rgba-opaque.png": (Image.new("RGBA", size, (255, 0, 0, 255)), (255, 0, 0)),
        "cmyk.jpg": (Image.new("CMYK", size, (0, 0, 0, 0)), white),
        "rgb.jpg": (Image.new("RGB", size, (10, 200, 30)), None),
    }
    palette = Image.new("P", size, 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    cases["p.png"] = (palette, (10, 20, 30))
    for name, (image, expected) in cases.items():
        loaded = load_image(save(image, tmp_path / name))
        assert loaded.mode == "RGB" and loaded.size == size, name
        if expected is not None:
            assert loaded.getpixel((5, 5)) == expected, name
    transparent = save(palette, tmp_path / "p-transparent.png", transparency=1)
    assert load_image(transparent).getpixel((5, 5)) == white


def test_deep_greyscale_is_scaled_to_8_bits_not_clipped(tmp_path):
    ramp16 = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    image = Image.fromarray(ramp16)
    assert image.mode == "I;16"
    loaded = np.asarray(load_image(save(image, tmp_path / "ramp16.png")))[:, :, 0]
    assert loaded.min() == 0 and loaded.max() == 255 and len(np.unique(loaded)) == 256
    int32 = Image.fromarray(np.full((8, 8), 32896, np.int32))  # mode I, 16-bit range
    assert load_image(save(int32, tmp_path / "i.tiff")).getpixel((0, 0)) == (128, 128, 128)
    floats = Image.fromarray(np.full((8, 8), 0.5, np.float32))  # mode F in [0, 1]
    assert load_image(save(floats, tmp_path / "f.tiff")).getpixel((0, 0)) == (128, 128, 128)


def test_nan_pixels_are_refused(tmp_path):
    values = np.zeros((8, 8), np.float32)
    values[3, 3] = np.nan
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(save(Image.fromarray(values), tmp_path / "nan.tiff"))


@pytest.mark.parametrize("orientation", [2, 3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    image = Image.new("RGB", (60, 30), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # a red corner to follow
    exif = image.getexif()
    exif[0x0112] = orientation
    path = save(image, tmp_path / f"o{orientation}.png", exif=exif)
    with Image.open(path) as raw:
        expected = ImageOps.exif_transpose(raw).convert("RGB")
    loaded = load_image(path)
    assert loaded.size == expected.size
    assert loaded.size == ((30, 60) if orientation in (6, 8) else (60, 30))
    assert np.array_equal(np.asarray(loaded), np.asarray(expected))


def test_corrupt_truncated_and_bomb_files_raise_image_load_error(tmp_path, monkeypatch):
    good = save(noise_image(64, 64), tmp_path / "good.png")
    cases = {
        "missing.png": None,
        "text.png": b"not a picture at all",
        "empty.png": b"",
        "cut.png": good.read_bytes()[:300],
        "garbled.png": good.read_bytes()[:60] + bytes(RNG.randrange(256) for _ in range(400)),
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageLoadError):
            load_image(tmp_path / name)
    with pytest.raises(ImageLoadError):
        load_image(tmp_path)  # a folder
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px: over 2x the limit (Pillow's error)
    with pytest.raises(ImageLoadError, match="decompression bombs"):
        load_image(good)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # between 1x and 2x (Pillow only warns)
    with pytest.raises(ImageLoadError, match="decompression bombs"):
        load_image(good)


def test_cli_names_a_bomb_in_one_line(tmp_path, monkeypatch):
    path = save(noise_image(64, 64), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    result = runner.invoke(app, ["run", "-i", str(path), "-p", "x"])
    assert result.exit_code == 2 and "too large to decode safely" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- every command-line option's bad values ----------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    picture = save(noise_image(60, 80), root / "pic.png")
    a_file = root / "a-file"
    a_file.write_text("x")
    empty = root / "empty-folder"
    empty.mkdir()
    data = root / "items.jsonl"
    data.write_text(json.dumps({"id": "a", "image": "pic.png", "question": "what", "answer": "one"}) + "\n")
    return {"pic": str(picture), "file": str(a_file), "empty": str(empty), "data": str(data), "root": root}


def bad_values(files):
    """(command line, words the error names) for every class of bad value of every option."""
    pic, file, empty, data = files["pic"], files["file"], files["empty"], files["data"]
    run = ["run", "-i", pic, "-p", "x"]
    ev = ["eval", "--data", data, "--out", str(files["root"] / "ev")]
    bench = ["bench", "--no-progress", "--out", str(files["root"] / "bo")]
    viz = ["viz", "-i", pic, "--out", str(files["root"] / "k.png")]
    make = ["data", "make", "--out", str(files["root"] / "scenes")]
    cases = []
    for command in (run, viz):
        cases += [
            (command + ["--budget", "0"], "budget"), (command + ["--budget", "-0.5"], "budget"),
            (command + ["--budget", "nan"], "budget"), (command + ["--budget", "2.5"], "budget"),
            (command + ["--budget", "many"], "budget"),
            (command + ["--alpha", "-0.1"], "--alpha"), (command + ["--alpha", "1.5"], "--alpha"),
            (command + ["--alpha", "nan"], "alpha"), (command + ["--alpha", "x"], "--alpha"),
            (command + ["--device", "tpu"], "device"), (command + ["--device", "cuda:99"], "cuda"),
            (command + ["--dtype", "float8"], "dtype"),
            (command + ["--model", empty], "config.json"), (command + ["--model", file], "is a file"),
            (command + ["--model", "/no/such/folder"], "no model folder"),
            (command + ["--model", "no such id!"], "no model folder"),
            (command + ["--model", "nosuch-org/nosuch-model"], "HF_HUB_OFFLINE"),
            (command[:1] + ["-i", file] + command[3:], "not an image"),
            (command[:1] + ["-i", empty] + command[3:], "not found"),
            (command + ["--bogus"], "No such option"),
        ]
    cases += [
        (run + ["--max-new-tokens", "0"], "--max-new-tokens"), (run + ["--max-new-tokens", "-3"], "--max-new-tokens"),
        (run + ["--init-layer", "99"], "init_layer"), (run + ["--final-layer", "-99"], "final_layer"),
        (run + ["--init-layer", "x"], "--init-layer"),
        (run + ["--allocation", "fast"], "allocation"), (run + ["--method", "magic"], "unknown method"),
        (["run", "-p", "only a prompt"], "--prompt needs an --image"), (["run", "-i", pic], "--image needs a --prompt"),
        (viz + ["--colors", "1000"], "--colors"), (viz + ["--colors", "1"], "--colors"),
        (viz + ["--panel", "5"], "--panel"), (viz + ["--seed", "-1"], "--seed"),
        (viz + ["--methods", ","], "no method"), (viz[:3] + ["--out", empty], "is a folder"),
        (ev + ["--limit", "0"], "--limit"), (ev + ["--limit", "-1"], "--limit"),
        (ev + ["--batch-size", "0"], "--batch-size"), (ev + ["--max-new-tokens", "0"], "--max-new-tokens"),
        (ev + ["--seed", "-1"], "--seed"), (ev + ["--alpha", "3"], "--alpha"),
        (ev + ["--budgets", ""], "at least one budget"), (ev + ["--budgets", "0.2,x"], "budget"),
        (ev + ["--methods", "hired,magic"], "unknown method"),
        (["eval", "--data", pic], "not a JSONL"), (["eval", "--data", empty], "no evaluation data"),
        (["eval", "--data", data, "--out", file], "is a file"),
        (bench + ["--seed", "-1"], "--seed"), (bench + ["--runs", "0"], "--runs"),
        (bench + ["--warmup", "-1"], "--warmup"), (bench + ["--new-tokens", "0"], "--new-tokens"),
        (bench + ["--memory-cap-gb", "0"], "--memory-cap-gb"), (bench + ["--memory-cap-gb", "inf"], "--memory-cap-gb"),
        (bench + ["--llm-layers", "0"], "--llm-layers"), (bench + ["--vit-layers", "1"], "--vit-layers"),
        (bench + ["--llm-layers", "999"], "--llm-layers 999"), (bench + ["--vit-layers", "999"], "--vit-layers 999"),
        (bench + ["--batch-size", "0"], "--batch-size"), (bench + ["--batch-size", "x"], "--batch-size"),
        (bench + ["--image", "0x10"], "between 1x1"), (bench + ["--image", "big"], "WxH"),
        (bench + ["--image", "99999x10"], "between 1x1"), (bench + ["--device", "tpu"], "device"),
        (["bench", "--out", file], "is a file"),
        (make + ["--n", "0"], "--n"), (make + ["--seed", "-1"], "--seed"),
        (["data", "make", "--out", file], "is a file"),
        (["data", "make"], "Missing option"), (["nosuch"], "No such command"),
    ]
    return cases


def test_every_bad_option_value_exits_2_with_one_line(files):
    failures = []
    for args, words in bad_values(files):
        result = runner.invoke(app, args)
        lines = result.stderr.strip().splitlines()
        if not (result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:")
                and words.lower() in lines[0].lower() and "Traceback" not in result.output):
            failures.append((args, result.exit_code, result.stderr[-300:], repr(result.exception)))
    assert not failures, "\n".join(map(str, failures))


def test_non_numeric_omp_num_threads_is_one_line(files, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    result = runner.invoke(app, ["run", "-i", files["pic"], "-p", "x"])
    assert result.exit_code == 2 and "OMP_NUM_THREADS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_with_no_arguments_asks_about_the_sample_scene():
    path, question, answer = sample_scene()
    assert path.is_file() and question and answer
    result = runner.invoke(app, ["run", "--max-new-tokens", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["prompt"] == question and data["image"] == str(path)
    assert data["decode_tokens_per_s"] is None  # one new token has no decode rate: null, not NaN
    text = runner.invoke(app, ["run", "--max-new-tokens", "1"])
    assert "(1 new token)" in text.stdout and "nan" not in text.stdout and "Loading weights" not in text.output


def test_help_shows_no_type_on_flags():
    for command in (["run", "--help"], ["bench", "--help"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0 and "<bool>" not in result.output and "x>=1" in result.output


# -- evaluation data -------------------------------------------------------------------------
def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_evaluation_data_is_checked_before_the_model(files, tmp_path):
    (tmp_path / "pic.png").write_bytes(open(files["pic"], "rb").read())
    item = {"id": "a", "image": "pic.png", "question": "what", "answer": "one"}
    bad = {
        "empty answers": [{**item, "answers": []}],
        "empty answer": [{**item, "answer": " "}],
        "no answer": [{k: v for k, v in item.items() if k != "answer"}],
        "repeated id": [item, {**item, "question": "another"}],
        "missing image": [{**item, "image": "nope.png"}],
        "not an object": [[1, 2]],
        "question not text": [{**item, "question": 3}],
    }
    for name, rows in bad.items():
        with pytest.raises(DataError):
            load_items(write_jsonl(tmp_path / f"{name}.jsonl", rows))
    with pytest.raises(DataError, match="not a JSONL"):
        load_items(files["pic"])
    for limit in (0, -1, 1.5, True):
        with pytest.raises(OptionError):
            load_items(write_jsonl(tmp_path / "ok.jsonl", [item]), limit=limit)
    assert [i["answers"] for i in load_items(write_jsonl(tmp_path / "n.jsonl", [{**item, "answers": [3, "x"]}]))] \
        == [["3", "x"]]


def test_other_data_into_the_same_out_is_refused_not_answered_from_the_cache(tmp_path):
    first = save(noise_image(60, 80, seed=1), tmp_path / "one.png")
    save(noise_image(60, 80, seed=2), tmp_path / "two.png")
    row = {"id": "q1", "image": first.name, "question": "what color is the star?", "answer": "red"}
    data_a = write_jsonl(tmp_path / "a.jsonl", [row])
    data_b = write_jsonl(tmp_path / "b.jsonl", [{**row, "image": "two.png"}])
    common = ["--out", str(tmp_path / "out"), "--methods", "prumerge+", "--budgets", "0.2,0.1", "--max-new-tokens", "1"]
    first_run = runner.invoke(app, ["eval", "--data", str(data_a), *common])
    assert first_run.exit_code == 0, first_run.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [(r["method"], r.get("adaptive")) for r in results] == [("full", False), ("prumerge+", True)]
    assert runner.invoke(app, ["eval", "--data", str(data_a), *common]).exit_code == 0  # resumes
    other = runner.invoke(app, ["eval", "--data", str(data_b), *common])
    assert other.exit_code == 2 and "another question or image" in other.stderr


# -- API misuse --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        {"budget": "0.2"}, {"budget": 0}, {"budget": 1.5}, {"budget": float("nan")}, {"budget": True},
        {"alpha": 2}, {"alpha": "half"}, {"alpha": float("nan")}, {"init_layer": 1.5}, {"final_layer": "last"},
        {"allocation": "fast"}, {"newlines": "some"}, {"method": ""}, {"method": 3}, {"seed": "x"}, {"seed": -1},
        {"seed": 1.0}, {"seed": False},
    ],
)
def test_every_config_field_is_type_and_range_checked(fields):
    with pytest.raises(ConfigError):
        hired.HiREDConfig(**fields)


def test_api_misuse_raises_typed_errors(model_next):
    model, processor = model_next
    inputs = image_inputs(processor, 120, 160)
    with pytest.raises(ConfigError):
        hired.apply(model, {"budget": 0.2})
    with pytest.raises(ConfigError):
        hired.apply(model, hired.HiREDConfig(method="magic"))
    with pytest.raises(UnsupportedModelError):
        hired.apply(torch.nn.Linear(2, 2))
    with pytest.raises(ModelLoadError):
        hired.from_pretrained("/no/such/checkpoint")
    with pytest.raises(ConfigError):
        hired.select_tokens(torch.rand(5, 64), torch.rand(64), (2, 2), "many", 0.5)
    for size, count in (((0, 10), 1), ("big", 1), ((10, 10), 0), ((10, 10), 1.5), ((10, 10), True)):
        with pytest.raises(hired.HiREDError):
            hired.planned_tokens(model.config, size, images_in_prompt=count)
    hired.apply(model, hired.HiREDConfig(budget=0.2))
    with pytest.raises(InputError, match="input_ids"):
        model(inputs_embeds=torch.zeros(1, 4, 8), pixel_values=inputs["pixel_values"],
              image_sizes=inputs["image_sizes"])
    with pytest.raises(InputError, match="input_ids"):
        model.generate(inputs_embeds=torch.zeros(1, 4, 8), pixel_values=inputs["pixel_values"],
                       image_sizes=inputs["image_sizes"])
    for bad in (float("nan"), float("inf")):
        pixels = inputs["pixel_values"].clone()
        pixels[0, 0, 0, 0, 0] = bad
        with pytest.raises(InputError, match="NaN or infinite"):
            model(input_ids=inputs["input_ids"], pixel_values=pixels, image_sizes=inputs["image_sizes"])
    with pytest.raises(ImageTokenMismatchError):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    with pytest.raises(InputError):
        model(*([inputs["input_ids"]] * 60))


def test_select_tokens_reads_a_float_budget_as_a_share():
    final, init = torch.rand(5, 64, generator=torch.Generator().manual_seed(0)), torch.rand(64)
    assert int(hired.select_tokens(final, init, (2, 2), 0.2, 0.5).sum()) == round(0.2 * 320)
    assert int(hired.select_tokens(final, init, (2, 2), 64, 0.5).sum()) == 64
    assert int(hired.select_tokens(final, init, (2, 2), np.int64(7), 0.5).sum()) == 7


@pytest.mark.parametrize("family", ["llava_next", "llava"])
def test_positional_arguments_work_after_apply_as_before(family, tiny_next, tiny_llava):
    model, processor = tiny_next if family == "llava_next" else tiny_llava
    inputs = image_inputs(processor, 200, 300)
    args = [inputs["input_ids"], inputs["pixel_values"]] + ([inputs["image_sizes"]] if family == "llava_next" else [])
    try:
        with torch.no_grad():
            reference = model(*args).logits[0, -1]
        hired.apply(model, hired.HiREDConfig(budget=1.0, newlines="all"))
        with torch.no_grad():
            patched = model(*args).logits[0, -1]
        torch.testing.assert_close(patched, reference, atol=1e-4, rtol=1e-4)
        hired.apply(model, hired.HiREDConfig(budget=0.2))
        out = model.generate(inputs["input_ids"], pixel_values=inputs["pixel_values"], max_new_tokens=2,
                             **({"image_sizes": inputs["image_sizes"]} if family == "llava_next" else {}))
        assert out.shape[1] == inputs["input_ids"].shape[1] + 2
        assert model.hired_report.kept == round(0.2 * model.hired_report.total)
    finally:
        hired.remove(model)


# -- prompts ------------------------------------------------------------------------------------
def test_prompts_that_do_not_match_the_images_or_the_context_are_one_line(files):
    """Two placeholders for one picture, or a prompt past the model's context (which the model
    would answer with garbage), exit 2 in one line; a typed <image> is explained, a URL named."""
    cases = [
        (["-p", "<image> <image> what"], "2 <image> placeholders for 1 image"),
        (["-p", "what " * 1100], "longer than the model's context of 1024"),
        (["-p", "what " * 1100, "--budget", "1.0"], "longer than the model's context of 1024"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["run", "-i", files["pic"], *args, "--max-new-tokens", "1"])
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["run", "-i", "https://example.com/cat.png", "-p", "x"])
    assert result.exit_code == 2 and "https://example.com/cat.png is a URL" in result.stderr
    result = runner.invoke(app, ["run", "-i", files["pic"], "-p", "<image> what color", "--max-new-tokens", "1"])
    assert result.exit_code == 0 and "hired adds it itself" in result.output
    assert "Words it does not know: <" not in result.output


def test_a_prompt_past_the_context_is_an_input_error_in_the_api(model_next, monkeypatch):
    model, processor = model_next
    inputs = image_inputs(processor, 120, 160)
    length = inputs["input_ids"].shape[1]
    for budget in (1.0, 0.2):
        hired.apply(model, hired.HiREDConfig(budget=budget))
        monkeypatch.setattr(model.config.text_config, "max_position_embeddings", 8)
        with pytest.raises(InputError, match="context of 8 tokens"):
            model.generate(**inputs, max_new_tokens=1)
        monkeypatch.setattr(model.config.text_config, "max_position_embeddings", length)
        model.generate(**inputs, max_new_tokens=1)  # fits
    hired.remove(model)
    monkeypatch.setattr(model.config.text_config, "max_position_embeddings", 8)
    with pytest.raises(InputError, match="context of 8 tokens"):
        hired.loading.model_inputs(model, processor, noise_image(120, 160), "<image> what")
    with pytest.raises(ImageTokenMismatchError, match="2 <image> placeholders for 1 image"):
        hired.loading.model_inputs(model, processor, noise_image(120, 160), "<image> <image> what")


# -- broken checkpoints -------------------------------------------------------------------------
def broken_checkpoint(root, name, config=None, weights=None):
    import shutil

    from hired.loading import DEMO_MODEL_DIR

    folder = root / name
    shutil.copytree(DEMO_MODEL_DIR, folder)
    if config is not None:
        data = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config(data)))
    if weights is not None:
        path = folder / "model.safetensors"
        path.write_bytes(weights(path.read_bytes()))
    return folder


def setting(path, value):
    def change(config):
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return config
    return change


@pytest.mark.parametrize("name, config, weights, message", [
    ("null", "null", None, "config.json: the file is not a JSON object (got null)"),
    ("number", "3", None, "config.json: the file is not a JSON object"),
    ("string", '"llava"', None, "config.json: the file is not a JSON object"),
    ("cut", '{"model_type": ', None, "config.json is not valid JSON"),
    ("hidden0", setting(["text_config", "hidden_size"], 0), None, "text_config.hidden_size must be a positive"),
    ("layers0", setting(["text_config", "num_hidden_layers"], 0), None, "text_config.num_hidden_layers must be"),
    ("heads-null", setting(["vision_config", "num_attention_heads"], None), None,
     "vision_config.num_attention_heads must be a positive integer, got null"),
    ("patch0", setting(["vision_config", "patch_size"], 0), None, "vision_config.patch_size must be"),
    ("text-config", setting(["text_config"], "x"), None, "text_config is not a JSON object"),
    ("pinpoints", setting(["image_grid_pinpoints"], [[0, 224]]), None, "image_grid_pinpoints must be"),
    ("pinpoints-flat", setting(["image_grid_pinpoints"], [224, 224]), None, "image_grid_pinpoints must be"),
    ("token", setting(["image_token_index"], "x"), None, "image_token_index"),
    ("truncated", None, lambda data: data[: len(data) // 2], "model.safetensors is truncated or corrupt"),
    ("zeroed", None, lambda data: bytes(len(data)), "model.safetensors is truncated or corrupt"),
    ("empty", None, lambda data: b"", "model.safetensors is truncated or empty"),
])
def test_broken_checkpoint_folders_are_one_line_naming_file_and_field(tmp_path, name, config, weights, message):
    folder = broken_checkpoint(tmp_path, name, config, weights)
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        hired.loading.load(str(folder))
    result = runner.invoke(app, ["run", "--model", str(folder), "-i", str(sample_scene()[0]), "-p", "x"])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1


# -- eval caches and items ------------------------------------------------------------------------
def test_eval_cache_is_keyed_by_dtype_and_refuses_or_ignores_what_it_cannot_trust(tmp_path):
    save(noise_image(60, 80, seed=1), tmp_path / "one.png")
    data = write_jsonl(tmp_path / "a.jsonl", [{"id": "q1", "image": "one.png", "question": "how many circles?",
                                               "answer": 2.0, "kind": "count"}])
    out = tmp_path / "out"
    common = ["--data", str(data), "--out", str(out), "--methods", "hired", "--budgets", "16,8", "--max-new-tokens",
              "1"]
    first = runner.invoke(app, ["eval", *common])
    assert first.exit_code == 0, first.output
    results = json.loads((out / "results.json").read_text())
    assert [r["budget"] for r in results["results"]] == [None, 16, 8]
    assert json.loads((out / "settings.json").read_text())["dtype"] == "float32"
    other_dtype = runner.invoke(app, ["eval", *common, "--dtype", "bfloat16"])  # would reuse float32 answers
    assert other_dtype.exit_code == 2 and "dtype 'float32' -> 'bfloat16'" in other_dtype.stderr, other_dtype.output
    cache = out / "answers" / "hired@16.jsonl"
    for text in ('[1, 2]\n', '{"id": 3}\n', '"x"\n', 'null\n', '\xff\n'):  # other shapes: answered again, a note
        cache.write_text(text, encoding="latin-1")
        again = runner.invoke(app, ["eval", *common])
        assert again.exit_code == 0 and "not a cached answer" in again.stderr, (text, again.output)
        assert json.loads(cache.read_text().splitlines()[-1])["id"] == "q1"
    for text in ("[1]", "null", "3", "\xff"):
        (out / "settings.json").write_text(text, encoding="latin-1")
        broken = runner.invoke(app, ["eval", *common])
        assert broken.exit_code == 2 and "not the settings file" in broken.stderr, broken.output


def test_eval_items_with_odd_kinds_fail_up_front_and_numbers_compare_as_numbers(tmp_path):
    from hired.evaluation.metrics import exact_match

    (tmp_path / "pic.png").write_bytes(save(noise_image(60, 80), tmp_path / "p.png").read_bytes())
    item = {"id": "a", "image": "pic.png", "question": "what", "answer": "one"}
    for kind in (None, 3, ["a"], "", {"k": 1}):
        with pytest.raises(DataError, match="kind must be a non-empty string"):
            load_items(write_jsonl(tmp_path / "k.jsonl", [{**item, "kind": kind}]))
    for prediction, answer in (("2", 2.0), ("2.0", "two"), ("1,000", "1000"), ("0.50", 0.5), ("3.", "three")):
        assert exact_match(prediction, str(answer)) == 1.0, (prediction, answer)
    assert exact_match("2.5", "25") == 0.0 and exact_match("2", "2.5") == 0.0


def test_the_accuracy_plot_draws_token_count_budgets(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from hired.evaluation.report import plot_accuracy

    def row(budget, kept):
        return {"method": "hired" if budget else "full", "budget": budget, "adaptive": False, "accuracy": 0.5,
                "ci95": [0.4, 0.6], "mean_kept": kept, "mean_total": 100 if kept else None}

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_accuracy({"model": "m", "majority": 0.3, "results": [row(None, None), row(16, 16), row(8, 8)]},
                  tmp_path / "a.png")
    drawn = [c for c in figures[0].axes[0].containers if c.get_label() == "hired"]
    assert len(drawn) == 1 and list(drawn[0].lines[0].get_xdata()) == [8.0, 16.0]


# -- huge numbers and non-finite scores ---------------------------------------------------------
def test_huge_numbers_are_range_checked_at_the_edges(files, tmp_path, monkeypatch, tiny_next):
    with pytest.raises(ConfigError, match=r"2\*\*63"):
        hired.HiREDConfig(seed=2**70)
    assert hired.HiREDConfig(seed=2**63 - 1).seed == 2**63 - 1
    for size in ((10**20, 10**20), (1, 2**31)):
        with pytest.raises(hired.HiREDError, match="sides must be from 1"):
            hired.planned_tokens(tiny_next[0].config, size)
    huge = "9" * 30
    for args in (["viz", "-i", files["pic"], "--seed", huge, "-o", str(tmp_path / "k.png")],
                 ["data", "make", "--out", str(tmp_path / "d"), "--seed", huge],
                 ["eval", "--data", files["data"], "--seed", huge]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "--seed" in result.stderr, result.output
    for threads in ("9" * 30, "5000", "0", "²"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        result = runner.invoke(app, ["run", "--max-new-tokens", "1"])
        assert result.exit_code == 2 and "OMP_NUM_THREADS must be an integer from 1 to" in result.stderr, result.output


def test_select_tokens_refuses_scores_that_are_not_finite():
    final, init = torch.rand(5, 64, generator=torch.Generator().manual_seed(0)), torch.rand(64)
    for bad in (float("nan"), float("inf"), float("-inf")):
        for which in ("final", "init"):
            f, i = final.clone(), init.clone()
            (f[2] if which == "final" else i)[3] = bad
            with pytest.raises(InputError, match="NaN or infinite"):
                hired.select_tokens(f, i, (2, 2), 64, 0.5)
    valid = torch.ones(5, 64, dtype=torch.bool)
    valid[4, 60:] = False
    f = final.clone()
    f[4, 60:] = float("nan")  # tokens that cannot be kept may hold anything
    assert int(hired.select_tokens(f, init, (2, 2), 64, 0.5, valid=valid).sum()) == 64


# -- generate arguments, copies and threads behave as on the unmodified model ---------------------
def test_max_length_and_min_length_count_from_the_callers_prompt(model_next):
    from hired.backends.hf.patch import generation_lengths

    model, processor = model_next
    inputs = image_inputs(processor, 120, 160)
    length = inputs["input_ids"].shape[1]
    reference = model.generate(**inputs, max_length=length + 3, do_sample=False)
    hired.apply(model, hired.HiREDConfig(budget=0.2))
    out = model.generate(**inputs, max_length=length + 3, do_sample=False)
    assert out.shape == reference.shape and torch.equal(out[:, :length], inputs["input_ids"])
    with pytest.raises(InputError, match="max_length"):
        model.generate(**inputs, max_length=length)
    assert generation_lengths(model, {"min_length": length + 4}, length, length - 50) == {"min_length": length - 46}
    assert generation_lengths(model, {"min_length": 10, "min_new_tokens": 2}, length, length - 50) == {}


def test_a_deep_copy_of_a_patched_model_and_two_threads_on_one_answer_as_alone(model_next):
    import copy
    from concurrent.futures import ThreadPoolExecutor

    model, processor = model_next
    hired.apply(model, hired.HiREDConfig(budget=0.2))
    batches = [image_inputs(processor, h, w, seed=s) for s, (h, w) in enumerate([(120, 160), (300, 100), (90, 90)])]

    def answer(target, inputs):
        with torch.no_grad():
            return target.generate(**inputs, max_new_tokens=3, do_sample=False), target.hired_report.kept

    alone = [answer(model, inputs) for inputs in batches]
    twin = copy.deepcopy(model)
    assert hired.is_applied(twin) and twin.hired_adapter.model is twin
    for (out, kept), inputs in zip(alone, batches):
        twin_out, twin_kept = answer(twin, inputs)
        assert torch.equal(twin_out, out) and twin_kept == kept
    hired.remove(twin)
    assert hired.is_applied(model) and not hired.is_applied(twin)
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda inputs: answer(model, inputs)[0], batches * 2))
    for out, (expected, _) in zip(together, alone * 2):
        assert torch.equal(out, expected)


def test_huge_counts_of_work_are_refused_not_run_for_ever(files, tmp_path):
    huge = "9" * 25
    cases = [
        (["run", "-i", files["pic"], "-p", "x", "--max-new-tokens", huge], "the model's context holds 1024 tokens"),
        (["eval", "--data", files["data"], "--max-new-tokens", "1024", "--out", str(tmp_path / "e")],
         "--max-new-tokens 1024: the model's context holds 1024"),
        (["bench", "--new-tokens", huge, "--out", str(tmp_path / "b")], "--new-tokens"),
        (["bench", "--batch-size", f"1,{huge}", "--out", str(tmp_path / "b")], "from 1 to 4096"),
        (["serve-bench", "--vllm", "/bin/true", "--concurrency", huge, "--out", str(tmp_path / "s"),
          "--work", str(tmp_path / "w")], "--concurrency values must be integers from 1 to 4096"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
