"""`hired run` end to end on the tiny random-weight model of real geometry, and its errors."""

import json

import pytest
from conftest import noise_image
from typer.testing import CliRunner

from hired.cli import app

runner = CliRunner()
TINY = ["--model", "tiny-llava-next"]  # real LLaVA-NeXT geometry: 5 x 576 tokens


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    noise_image(480, 640).save(path)
    return path


def test_run_prints_answer_tokens_and_timings(picture):
    result = runner.invoke(app, ["run", *TINY, "--image", str(picture), "--prompt", "what is the color",
                                 "--budget", "0.2", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output
    assert "Visual tokens kept: 576/2880 (20.0%)" in result.output
    assert "Time to first token" in result.output and "tokens/s" in result.output and "peak memory" in result.output


def test_run_json_reports_consistent_numbers(picture):
    result = runner.invoke(app, ["run", *TINY, "-i", str(picture), "-p", "how many", "--budget", "100", "--json",
                                 "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["kept"] == 100 and data["total"] == 2880 and data["new_tokens"] == 3
    assert sum(data["partition_budgets"]) == 100
    assert data["llm_image_tokens"] < data["llm_image_tokens_full"]
    assert data["ttft_s"] > 0 and data["peak_memory_bytes"] > 0


def test_official_allocation_from_the_cli(picture):
    result = runner.invoke(app, ["run", *TINY, "-i", str(picture), "-p", "x", "--allocation", "official", "--json",
                                 "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["partition_budgets"][0] == 288


def test_received_score_from_the_cli(picture):
    result = runner.invoke(app, ["run", *TINY, "-i", str(picture), "-p", "x", "--score", "received", "--json",
                                 "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["kept"] == round(0.2 * out["total"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "0"], "budget count must be >= 1"),
        (["--budget", "1.5"], "budget ratio must be in (0, 1]"),
        (["--budget", "lots"], "budget must be a ratio"),
        (["--alpha", "2"], "Invalid value for '--alpha'"),
        (["--init-layer", "99"], "init_layer=99 is out of range"),
        (["--allocation", "fast"], "allocation must be"),
        (["--method", "magic"], "unknown method 'magic'"),
        (["--score", "bogus"], "score must be one of cls, received"),
        (["--model", "/no/such/model"], "no model folder '/no/such/model'"),
    ],
)
def test_bad_options_exit_2_with_one_line(picture, args, message):
    result = runner.invoke(app, ["run", *TINY, "-i", str(picture), "-p", "x", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_and_truncated_images_exit_2(tmp_path, picture):
    missing = tmp_path / "missing.jpg"
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(picture.read_bytes()[:2000])
    for path, message in [(missing, "not found"), (text, "not an image"), (truncated, "truncated")]:
        result = runner.invoke(app, ["run", *TINY, "-i", str(path), "-p", "x"])
        assert result.exit_code == 2 and message in result.stderr, result.output


def test_user_text_is_printed_as_written_not_read_as_markup(tmp_path, picture):
    """'[/b]' in a path, a prompt, a model id, --out or a usage error's value is shown as is (no
    rich MarkupError traceback, even after the work is done)."""
    odd = tmp_path / "[/b]"
    cases = [
        (["run", "-i", str(odd / "x.png"), "-p", "x"], 2, "[/b]/x.png"),
        (["run", "-i", str(picture), "-p", "x", "--model", "[/b]"], 2, "'[/b]'"),
        (["run", "-i", str(picture), "-p", "x", "--[/b]"], 2, "--[/b]"),
        (["run", "-i", str(picture), "-p", "what [/b] [red]", "--max-new-tokens", "1"], 0, "Answer:"),
        (["viz", "-i", str(picture), "--methods", "hired", "--panel", "96", "-o", str(odd / "k.png")], 0, "[/b]/k.png"),
    ]
    for args, code, shown in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert shown in result.output, (args, result.output)
        assert "Traceback" not in result.output and "MarkupError" not in result.output


def test_help_names_every_supported_family():
    from hired.families import FAMILIES

    shown = runner.invoke(app, ["--help"], terminal_width=300).output
    assert all(family.label and family.label in shown for family in FAMILIES.values()), shown
    assert "Qwen2.5-VL" in shown and "InternVL" in shown


def test_narrow_viz_panels_are_refused_or_get_short_titles(picture, tmp_path):
    from hired.viz import partition_title

    result = runner.invoke(app, ["viz", "-i", str(picture), "--panel", "24", "-o", str(tmp_path / "k.png")])
    assert result.exit_code == 2 and "--panel" in result.stderr

    class Report:
        grid, partitions, partition_budgets, kept_per_partition = (2, 2), 5, [10, 3, 3, 2, 2], [10, 3, 3, 2, 2]

    assert partition_title(Report(), 1) == "(0,0) budget 3, kept 3"
    assert partition_title(Report(), 1, lambda text: len(text) <= 14) == "(0,0) kept 3/3"
    assert partition_title(Report(), 1, lambda text: False) == "3/3"
