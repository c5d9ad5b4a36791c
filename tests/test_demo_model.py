"""The bundled demo model: loads offline from the package, has LLaVA-NeXT's geometry, does the task,
and HiRED applies to it."""

import pytest
import torch
from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

import hired
from hired.data import scenes as S
from hired.loading import DEMO_MODEL_DIR, load

pytestmark = pytest.mark.skipif(not (DEMO_MODEL_DIR / "model.safetensors").exists(), reason="demo model not built")


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    return load("demo", device="cpu", dtype="float32")


def test_loads_with_from_pretrained_from_the_package():
    model = LlavaNextForConditionalGeneration.from_pretrained(DEMO_MODEL_DIR)
    processor = LlavaNextProcessor.from_pretrained(DEMO_MODEL_DIR)
    assert type(processor.image_processor).__name__ == "LlavaNextImageProcessorPil"
    assert model.config.vision_config.patch_size == 14
    size = sum(f.stat().st_size for f in DEMO_MODEL_DIR.iterdir())
    assert size < 25 * 2**20


def test_load_demo_spec(demo):
    assert demo.name == "demo" and demo.random_weights is False
    assert demo.format_prompt("what color is the star?") == "<image>\nwhat color is the star?"


def test_llava_next_geometry_partitions_unpadding_and_newlines(demo):
    config = demo.model.config
    crop = config.vision_config.image_size
    assert sorted(map(tuple, config.image_grid_pinpoints)) == sorted(
        [(crop, 2 * crop), (2 * crop, crop), (2 * crop, 2 * crop), (3 * crop, crop), (crop, 3 * crop)])
    n = (crop // 14) ** 2
    image, _ = S.scene(0, 0)
    square = image.resize((448, 448))
    inputs = demo.processor(images=square, text="<image>\nx", return_tensors="pt")
    assert inputs["pixel_values"].shape[1] == 5  # full view + 2 x 2 sub-images
    side = crop // 14 * 2
    image_tokens = int((inputs["input_ids"] == config.image_token_id).sum())
    assert image_tokens == n + side * side + side  # base + grid + one newline per row
    # A picture whose aspect matches no pinpoint is padded; unpadding removes rows of the grid.
    odd = image.resize((448, 300))
    inputs = demo.processor(images=odd, text="<image>\nx", return_tensors="pt")
    assert int((inputs["input_ids"] == config.image_token_id).sum()) < n + side * side + side


def _ask(loaded, image, question):
    inputs = loaded.processor(images=image, text=loaded.format_prompt(question), return_tensors="pt")
    out = loaded.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    return loaded.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def _test_questions(count):
    out, index = [], 0
    while len(out) < count:
        if S.split_of(0, index) == "test":
            image, qas = S.scene(0, index)
            out += [(image, qa) for qa in qas]
        index += 1
    return out[:count]


def test_answers_held_out_questions_mostly_right(demo):
    questions = _test_questions(20)
    right = sum(_ask(demo, image, qa["question"]) == qa["answer"] for image, qa in questions)
    assert right >= 14, f"{right}/20"


def test_hired_applies_and_keeps_the_budget():
    loaded = load("demo", device="cpu", dtype="float32")
    hired.apply(loaded.model, hired.HiREDConfig(budget=0.2))
    image, qas = _test_questions(1)[0]
    answer = _ask(loaded, image, qas["question"])
    assert isinstance(answer, str)
    report = loaded.model.hired_report
    assert report.kept == round(0.2 * report.total)
    assert report.total == (1 + len(report.images[0].partition_budgets) - 1) * 64
    hired.remove(loaded.model)


def test_hired_run_defaults_to_the_demo_model(tmp_path):
    from typer.testing import CliRunner

    from hired.cli import app

    image, qas = S.scene(0, 26)
    path = tmp_path / "scene.png"
    image.save(path)
    question = next(qa for qa in qas if qa["kind"] == "letter")
    result = CliRunner().invoke(app, ["run", "-i", str(path), "-p", question["question"], "--budget", "0.2"])
    assert result.exit_code == 0, result.output
    assert "Model demo" in result.output and "RANDOM" not in result.output
    assert f"Answer: {question['answer']}" in result.output
    assert "Visual tokens kept: 64/320 (20.0%)" in result.output
    unknown = CliRunner().invoke(app, ["run", "-i", str(path), "-p", "what is written on the sign?"])
    assert unknown.exit_code == 0 and "Words it does not know: written, on, sign." in unknown.output
