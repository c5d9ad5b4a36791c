"""`hired eval`: metrics, data loading, caching/resume and the files it writes."""

import json

import pytest
from conftest import noise_image
from typer.testing import CliRunner

from hired.cli import app
from hired.errors import HiREDError
from hired.evaluation.data import load_items
from hired.evaluation.metrics import confidence_interval, exact_match, normalize_answer, vqa_accuracy
from hired.experiments import Arm, make_arms

runner = CliRunner()


def test_normalization_and_exact_match():
    assert normalize_answer("The Red.") == "red"
    assert normalize_answer("two  squares!") == "2 squares"
    assert exact_match("A circle", "circle") == 1.0 and exact_match("square", "circle") == 0.0


def test_vqa_accuracy_counts_matching_references():
    refs = ["red"] * 3 + ["blue"] * 7
    assert vqa_accuracy("blue", refs) == pytest.approx(1.0)
    assert vqa_accuracy("red", refs) == pytest.approx((3 * (2 / 3) + 7 * 1.0) / 10)
    assert vqa_accuracy("green", refs) == 0.0


def test_confidence_interval_brackets_the_mean():
    low, high = confidence_interval([1.0] * 80 + [0.0] * 20)
    assert 0.7 < low < 0.8 < high < 0.9
    low, high = confidence_interval([0.5, 1.0, 0.0, 1.0])
    assert low <= 0.625 <= high


def test_arms_and_their_configs():
    arms = make_arms(["hired", "hired-official"], [0.2, 64])
    assert [a.key for a in arms] == ["full", "hired@0.2", "hired@64", "hired-official@0.2", "hired-official@64"]
    assert Arm("full").config() is None
    assert arms[3].config().allocation == "official"
    received = Arm("visionzip-received", 0.2).config()
    assert (received.method, received.score, arms[1].config().score) == ("visionzip", "received", None)
    with pytest.raises(HiREDError, match="unknown method"):
        make_arms(["magic"], [0.2])


@pytest.fixture
def dataset(tmp_path):
    (tmp_path / "images").mkdir()
    rows = []
    for i, (h, w) in enumerate([(300, 300), (400, 800), (600, 200)]):
        noise_image(h, w, seed=i).save(tmp_path / "images" / f"{i}.png")
        rows.append({"id": f"q{i}", "image": f"images/{i}.png", "question": "what color is the square",
                     "answer": "red", "kind": "color"})
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_load_items_resolves_images_and_refuses_bad_rows(dataset, tmp_path):
    items = load_items(dataset)
    assert len(items) == 3 and items[0]["image"] == str((dataset / "images" / "0.png").resolve())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "x.png"}\n')
    with pytest.raises(HiREDError, match="lacks question, answer"):
        load_items(bad)
    with pytest.raises(HiREDError, match="no evaluation data"):
        load_items(tmp_path / "nothing")


def test_eval_writes_results_and_resumes_from_its_cache(dataset, tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--data", str(dataset), "--model", "tiny-llava-next", "--methods", "hired,hired-official",
            "--budgets", "1.0,0.2", "--out", str(out), "--max-new-tokens", "2", "--batch-size", "2"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    results = json.loads((out / "results.json").read_text())
    assert (out / "results.md").is_file() and (out / "accuracy.png").stat().st_size > 0
    arms = {r["arm"]: r for r in results["results"]}
    assert set(arms) == {"full", "hired@1.0", "hired@0.2", "hired-official@1.0", "hired-official@0.2"}
    assert all(r["n"] == 3 and 0 <= r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] <= 1 for r in arms.values())
    assert arms["hired@0.2"]["mean_kept"] < arms["hired@1.0"]["mean_kept"]
    assert results["majority"] == 1.0  # every answer is "red"

    def answers(arm):
        return [json.loads(line) for line in (out / "answers" / f"{arm}.jsonl").read_text().splitlines()]

    # budget 1.0 answers exactly like the full model
    assert [a["prediction"] for a in answers("hired@1.0")] == [a["prediction"] for a in answers("full")]
    # drop one cached answer, as if the run had been stopped: only that one is recomputed
    path = out / "answers" / "hired@0.2.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n")
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert len(path.read_text().splitlines()) == 3
    assert len((out / "answers" / "full.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "results.json").read_text())["results"] == results["results"]
    # another model into the same folder would reuse answers it did not give: refused
    other = runner.invoke(app, [*args, "--model", "tiny-llava"])
    assert other.exit_code == 2 and "cached answers of another run" in other.stderr


def test_eval_refuses_unknown_methods_and_missing_data(dataset, tmp_path):
    result = runner.invoke(app, ["eval", "--data", str(dataset), "--methods", "magic"])
    assert result.exit_code == 2 and "unknown method 'magic'" in result.stderr
    result = runner.invoke(app, ["eval", "--data", str(tmp_path / "none"), "--methods", "hired"])
    assert result.exit_code == 2 and "no evaluation data" in result.stderr


def test_lmms_model_args_become_a_config():
    from hired.lmms import split_model_args

    config, rest = split_model_args({"pretrained": "x", "budget": "0.2", "alpha": "0.3", "allocation": "official"})
    assert config.budget == 0.2 and config.alpha == 0.3 and config.allocation == "official"
    assert rest == {"pretrained": "x"}
    config, _ = split_model_args({"budget": 576})
    assert config.budget == 576


def test_lmms_adapter_imports_where_lmms_eval_does():
    pytest.importorskip("lmms_eval")
    from hired.lmms.models.hired_llava import HiREDLlava

    assert HiREDLlava.__name__ == "HiREDLlava"
