"""`hired viz`: token boxes land on their pixels, the CLI writes the rows it was asked for."""

import numpy as np
import pytest
import torch
from conftest import noise_image
from PIL import Image
from typer.testing import CliRunner

from hired.cli import app
from hired.core.report import ImageReport
from hired.viz import DROPPED, Row, partition_pictures, plan, render

runner = CliRunner()
TINY = ["--model", "tiny-llava-next"]
SIDE, N = 24, 576


def report_keeping(tokens_per_partition: list[list[int]], grid=(2, 2)) -> ImageReport:
    P = len(tokens_per_partition)
    keep = torch.zeros(P, N, dtype=torch.bool)
    for p, tokens in enumerate(tokens_per_partition):
        keep[p, tokens] = True
    return ImageReport(
        image_size=(672, 672), grid=grid, budget=int(keep.sum()), partition_budgets=keep.sum(1).tolist(),
        keep_mask=keep, valid=torch.ones(P, N, dtype=torch.bool), newline_tokens=0, llm_tokens_full=P * N,
    )


@pytest.mark.parametrize("panel", [240, 168, 100])
def test_a_kept_token_is_bright_exactly_on_its_patch(panel):
    token = 5 * SIDE + 17  # row 5, column 17
    report = report_keeping([[token], [0], [], [], [N - 1]])
    white = [Image.new("RGB", (336, 336), "white")] * 5
    picture, panels = render([Row("test", report)], white, panel=panel, outline=False)
    pixels = np.asarray(picture).astype(int)
    for pn, expected in zip(panels, [token, 0, None, None, N - 1]):
        tile = pixels[pn.y : pn.y + pn.size, pn.x : pn.x + pn.size].min(-1)
        bright = np.argwhere(tile > 200)
        if expected is None:
            assert bright.size == 0
            continue
        x0, y0, x1, y1 = pn.token_box(expected, SIDE)
        # the bright pixels are exactly the token's patch (14 px of 336, scaled to the panel)
        assert (bright.min(0) + [pn.y, pn.x]).tolist() == [y0, x0]
        assert (bright.max(0) + [pn.y, pn.x] + 1).tolist() == [y1, x1]
        r, c = divmod(expected, SIDE)
        scale = pn.size / 336
        assert abs(x0 - pn.x - c * 14 * scale) < 1 and abs(y0 - pn.y - r * 14 * scale) < 1
        assert tile.min() == round(255 * DROPPED) or bright.size == tile.size
    # outlines sit on the kept token's box edges
    outlined, _ = render([Row("test", report)], white, panel=panel, outline=True)
    x0, y0, x1, y1 = panels[0].token_box(token, SIDE)
    assert np.asarray(outlined)[y0, x0].tolist() == [255, 214, 0]


def test_partition_pictures_undo_the_processor_normalisation(tiny_next):
    _, processor = tiny_next
    picture = Image.new("RGB", (336, 336), (200, 40, 90))
    pixels = processor.image_processor(images=picture, return_tensors="pt")["pixel_values"][0]
    ip = processor.image_processor
    pictures = partition_pictures(pixels, ip.image_mean, ip.image_std)
    assert len(pictures) == pixels.shape[0]
    assert np.abs(np.asarray(pictures[0]).astype(int) - [200, 40, 90]).max() <= 2


def test_a_native_resolution_picture_is_rebuilt_from_its_patches_and_cut_into_cells():
    """Qwen-VL's flat patches (merge groups consecutive) back to the picture, pixel for pixel
    where the processor did not resize (sides already multiples of 28), then its 448 px cells."""
    from hired.presets import build_processor
    from hired.viz import cell_pictures, native_picture

    processor = build_processor("qwen2_5_vl").image_processor
    original = noise_image(280, 504)
    out = processor(images=original, return_tensors="pt")
    grid = tuple(out["image_grid_thw"][0].tolist())
    assert grid == (1, 20, 36)
    rebuilt = native_picture(out["pixel_values"], grid, processor)
    assert rebuilt.size == original.size
    assert np.abs(np.asarray(rebuilt).astype(int) - np.asarray(original.convert("RGB")).astype(int)).max() <= 2
    cells = cell_pictures(rebuilt, 448, (1, 2))
    assert [c.size for c in cells] == [(448, 448)] * 2
    assert np.asarray(cells[1])[0, 56:].tolist() == [[96, 96, 96]] * (448 - 56)  # past the picture: grey


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "wide.png"
    noise_image(300, 700).save(path)  # a 1 x 3 sub-image grid with padding
    return path


def test_cli_writes_one_row_per_method(picture, tmp_path):
    out = tmp_path / "kept.png"
    result = runner.invoke(app, ["viz", *TINY, "--image", str(picture), "--methods", "hired,hired-official,spatial",
                                 "--out", str(out), "--panel", "96"])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and "3 rows x 4 panels" in result.output
    assert "hired-official: kept" in result.output  # every command takes the same method names
    drawn = Image.open(out)
    assert drawn.format == "PNG"
    reports = [report_keeping([[0]] * 4, grid=(1, 3))] * 3
    width, height, panels = plan([Row(m, r) for m, r in zip("abc", reports)], panel=96)
    assert drawn.size == (width, height) and len(panels) == 12


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "MISSING.png"], "image file not found"),
        (["--methods", "hired,nope"], "unknown method 'nope'"),
        (["--budget", "0"], "budget"),
    ],
)
def test_cli_errors_are_one_line(picture, tmp_path, args, message):
    base = ["viz", *TINY, "--image", str(picture), "--out", str(tmp_path / "x.png")]
    result = runner.invoke(app, base + args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_refuses_a_file_that_is_not_an_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture at all")
    result = runner.invoke(app, ["viz", *TINY, "--image", str(bad), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "not an image file" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
