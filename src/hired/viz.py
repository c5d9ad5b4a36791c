"""A picture of the kept tokens: every partition as the model saw it, one row per method.

Each partition (the full view, then the sub-images in their grid) is drawn from the processor's
own ``pixel_values`` (denormalised with its ``image_mean`` / ``image_std``), so resize, padding and
cropping are exactly the model's. Dropped tokens are dimmed, tokens the model's unpadding removes
are greyed out, and the edges of kept regions are outlined. Each partition is titled with its
budget and kept count; each row with its method and total.

A native-resolution model (Qwen-VL: flat patches of one resized picture, no full view) is drawn
as its phase-1 cells: the picture rebuilt from its patches, cut into the cells HiRED shares the
budget among, the padding of partial cells greyed out.

``collect`` runs several methods on one model, picture and prompt (apply, one forward pass, read
``model.hired_report``, remove) and ``draw`` turns the rows into a ``PIL.Image``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from hired.core.report import ImageReport

DROPPED = 0.3  # brightness of dropped tokens
INVALID = (96, 96, 96)  # tokens the model's unpadding removes (not part of the picture)
OUTLINE = (255, 214, 0)
LABEL_WIDTH = 150
TITLE = 18  # height of a partition title
GAP = 8
ROW_GAP = 14


@dataclass
class Row:
    """One method's keep decision for the picture."""

    method: str
    report: ImageReport
    full_view: bool = True  # partition 0 is a full view (else every partition is a cell of the grid)
    shape: tuple[int, int] | None = None  # (rows, cols) of a partition's tokens; None: a square


@dataclass
class Panel:
    """Where partition ``partition`` of row ``row`` lies in the output (a square of ``size`` px)."""

    row: int
    partition: int
    x: int
    y: int
    size: int

    def token_box(self, token: int, shape: int | tuple[int, int]) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1), x1 / y1 exclusive, of token ``token`` of a grid of ``shape``
        (rows, cols), or of a ``shape x shape`` grid."""
        rows, cols = (shape, shape) if isinstance(shape, int) else shape
        r, c = divmod(int(token), cols)
        xs = [-(-i * self.size // cols) for i in range(cols + 1)]  # first pixel of each token: ceil
        ys = [-(-i * self.size // rows) for i in range(rows + 1)]
        return self.x + xs[c], self.y + ys[r], self.x + xs[c + 1], self.y + ys[r + 1]


def native_picture(pixel_values: torch.Tensor, grid: tuple[int, int, int], image_processor: Any) -> Image.Image:
    """The resized picture (first frame) a native-resolution processor cut into the flat patches
    ``pixel_values`` [t x h x w, C x temporal x patch x patch] of ``grid`` (t, h, w): the 2 x 2
    merge groups' patches consecutive, as Qwen-VL's processors emit them."""
    t, h, w = (int(v) for v in grid)
    patch, temporal = int(image_processor.patch_size), int(image_processor.temporal_patch_size)
    merge = int(image_processor.merge_size)
    pixels = pixel_values.detach().float().cpu()
    channels = pixels.shape[-1] // (temporal * patch * patch)
    pixels = pixels.view(t, h // merge, w // merge, merge, merge, channels, temporal, patch, patch)
    frame = pixels[0, :, :, :, :, :, 0].permute(4, 0, 2, 5, 1, 3, 6).reshape(channels, h * patch, w * patch)
    return partition_pictures(frame, image_processor.image_mean, image_processor.image_std)[0]


def cell_pictures(picture: Image.Image, cell: int | tuple[int, int], grid: tuple[int, int]) -> list[Image.Image]:
    """``picture`` cut into ``grid`` (rows, cols) cells of ``cell`` = (height, width) px (or a
    square side), row-major; the padding of partial cells (past the picture) in the invalid grey."""
    (ch, cw), (rows, cols) = ((cell, cell) if isinstance(cell, int) else cell), grid
    out = []
    for r in range(rows):
        for c in range(cols):
            tile = Image.new("RGB", (cw, ch), INVALID)
            tile.paste(picture.crop((c * cw, r * ch, min((c + 1) * cw, picture.width),
                                     min((r + 1) * ch, picture.height))), (0, 0))
            out.append(tile)
    return out


def partition_pictures(pixel_values: torch.Tensor, image_mean: Any, image_std: Any) -> list[Image.Image]:
    """RGB pictures of one image's partitions from its processed pixel values ([P, 3, H, W] or
    [3, H, W]) and the processor's normalisation."""
    pixels = pixel_values.detach().float().cpu()
    if pixels.dim() == 3:
        pixels = pixels[None]
    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1)
    rgb = ((pixels * std + mean).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(p)) for p in rgb]


def plan(rows: list[Row], panel: int = 240) -> tuple[int, int, list[Panel]]:
    """(width, height, panels): the full view on the left of each row, the sub-images in their
    grid (rows without a full view: every partition in the grid)."""
    panels, y, width = [], 0, LABEL_WIDTH
    for i, row in enumerate(rows):
        grid_rows, grid_cols = row.report.grid
        if not row.full_view:
            for k in range(row.report.partitions):
                r, c = divmod(k, grid_cols)
                panels.append(Panel(i, k, LABEL_WIDTH + c * (panel + GAP), y + TITLE + r * (panel + TITLE), panel))
            width = max(width, LABEL_WIDTH + grid_cols * (panel + GAP))
            y += grid_rows * (panel + TITLE) + ROW_GAP
            continue
        subs = row.report.partitions - 1
        # the full view as tall as the sub-image mosaic beside it
        full = grid_rows * panel + (grid_rows - 1) * TITLE if subs else panel
        panels.append(Panel(i, 0, LABEL_WIDTH, y + TITLE, full))
        x0 = LABEL_WIDTH + full + 2 * GAP
        for k in range(subs):
            r, c = divmod(k, grid_cols)
            panels.append(Panel(i, k + 1, x0 + c * (panel + GAP), y + TITLE + r * (panel + TITLE), panel))
        width = max(width, x0 + grid_cols * (panel + GAP) if subs else LABEL_WIDTH + full + GAP)
        y += full + TITLE + ROW_GAP
    return width, y - ROW_GAP if rows else 0, panels


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def token_grid(count: int, shape: tuple[int, int] | None) -> tuple[int, int]:
    """(rows, cols) of a partition's ``count`` tokens: ``shape``, or a square."""
    if shape is not None:
        return shape
    side = int(round(count**0.5))
    return side, side


def _tile(picture: Image.Image, keep: torch.Tensor, valid: torch.Tensor, size: int,
          shape: tuple[int, int] | None = None) -> Image.Image:
    """One partition: the picture at ``size`` px with dropped tokens dimmed and invalid ones greyed."""
    rows, cols = token_grid(keep.numel(), shape)
    pixels = np.asarray(picture.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
    row_of, col_of = (np.arange(size) * rows) // size, (np.arange(size) * cols) // size  # token of each pixel
    keep_grid = keep.view(rows, cols).numpy()[row_of][:, col_of]
    valid_grid = valid.view(rows, cols).numpy()[row_of][:, col_of]
    factor = np.where(keep_grid, 1.0, DROPPED)[..., None]
    out = pixels * factor
    out[~valid_grid] = INVALID
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def _outline(draw: ImageDraw.ImageDraw, panel: Panel, keep: torch.Tensor, shape: tuple[int, int] | None = None
             ) -> None:
    """Outline the boundary of the kept regions (edges between a kept and a dropped token)."""
    rows, cols = token_grid(keep.numel(), shape)
    grid = keep.view(rows, cols).numpy()
    padded = np.pad(grid, 1)
    for token in np.flatnonzero(grid):
        r, c = divmod(int(token), cols)
        x0, y0, x1, y1 = panel.token_box(token, (rows, cols))
        if not padded[r, c + 1]:  # above
            draw.line([(x0, y0), (x1 - 1, y0)], fill=OUTLINE)
        if not padded[r + 2, c + 1]:  # below
            draw.line([(x0, y1 - 1), (x1 - 1, y1 - 1)], fill=OUTLINE)
        if not padded[r + 1, c]:  # left
            draw.line([(x0, y0), (x0, y1 - 1)], fill=OUTLINE)
        if not padded[r + 1, c + 2]:  # right
            draw.line([(x1 - 1, y0), (x1 - 1, y1 - 1)], fill=OUTLINE)


def partition_title(report: ImageReport, partition: int, fits: Callable[[str], bool] = lambda text: True,
                    full_view: bool = True) -> str:
    """The partition's name, budget and kept count, in the longest wording that ``fits`` its panel."""
    cols = report.grid[1]
    if full_view and (partition == 0 or report.partitions == 1):
        name = "full view"
    else:
        r, c = divmod(partition - 1 if full_view else partition, cols)
        name = f"({r},{c})"
    budget = report.partition_budgets[partition]
    kept = report.kept_per_partition[partition]
    wordings = [f"{name} budget {budget}, kept {kept}", f"{name} kept {kept}/{budget}", f"{kept}/{budget}"]
    return next((text for text in wordings if fits(text)), wordings[-1])


def draw(rows: list[Row], pictures: list[Image.Image], panel: int = 240, outline: bool = True) -> Image.Image:
    """The kept tokens of each row over the partition ``pictures`` (full view first), as a PIL image."""
    return render(rows, pictures, panel, outline)[0]


def render(
    rows: list[Row], pictures: list[Image.Image], panel: int = 240, outline: bool = True
) -> tuple[Image.Image, list[Panel]]:
    """:func:`draw`, also returning where each partition was drawn."""
    width, height, panels = plan(rows, panel)
    canvas = Image.new("RGB", (width, max(height, 1)), "white")
    pen = ImageDraw.Draw(canvas)
    small, big = _font(11), _font(15)
    for panel_ in panels:
        report = rows[panel_.row].report
        p = panel_.partition
        if p >= len(pictures):
            method = rows[panel_.row].method
            raise ValueError(f"row {method!r} has {report.partitions} partitions, got {len(pictures)} pictures")
        shape = rows[panel_.row].shape
        tile = _tile(pictures[p], report.keep_mask[p].cpu(), report.valid[p].cpu(), panel_.size, shape)
        canvas.paste(tile, (panel_.x, panel_.y))
        if outline:
            _outline(pen, panel_, (report.keep_mask[p] & report.valid[p]).cpu(), shape)
        title = partition_title(report, p, lambda text, size=panel_.size: pen.textlength(text, font=small) <= size,
                                rows[panel_.row].full_view)
        pen.text((panel_.x, panel_.y - TITLE + 2), title, fill="black", font=small)
    for i, row in enumerate(rows):
        first = next(pn for pn in panels if pn.row == i)
        report = row.report
        share = 100 * report.kept / max(report.total, 1)
        pen.text((6, first.y + 4), row.method, fill="black", font=big)
        pen.text((6, first.y + 26), f"kept {report.kept}/{report.total}", fill="black", font=small)
        pen.text((6, first.y + 42), f"({share:.1f}%), budget {report.budget}", fill="black", font=small)
    return canvas, panels


def collect(
    model: Any,
    processor: Any,
    image: Image.Image,
    prompt: str,
    methods: list[str],
    budget: float | int = 0.2,
    alpha: float = 0.5,
    seed: int = 0,
) -> tuple[list[Row], list[Image.Image]]:
    """Run each method on the same model, picture and prompt; return its rows and the partition
    pictures. ``prompt`` must already hold the image placeholder (see ``LoadedModel.format_prompt``).
    The model is left patched as it was on entry."""
    import hired
    from hired.backends.hf.table import family_for_model
    from hired.experiments import method_config
    from hired.loading import model_inputs

    configs = [method_config(m, budget, alpha, seed) for m in methods]  # validate first
    inputs = model_inputs(model, processor, image, prompt)
    image_processor = getattr(processor, "image_processor", processor)
    pixels = inputs["pixel_values"]  # [1, P, 3, H, W] (LLaVA-NeXT), the image's crops [P, 3, H, W] or flat patches
    family, row = family_for_model(model)
    layout = family.layout(model.config, row.image_inputs(model, dict(inputs))[0])
    if pixels.dim() == 2:  # flat patches of one native-resolution picture (Qwen-VL): its phase-1 cells
        grid = tuple(inputs["image_grid_thw"][0].tolist())
        token_px = int(image_processor.merge_size) * int(image_processor.patch_size)
        cell = (layout.token_shape[0] * token_px, layout.token_shape[1] * token_px)
        pictures = cell_pictures(native_picture(pixels, grid, image_processor), cell, layout.grid)
    else:
        pixels = pixels[0] if pixels.dim() == 5 else pixels
        pictures = partition_pictures(pixels, image_processor.image_mean, image_processor.image_std)
        if layout.crop_order is not None:  # the model's crop order (InternVL: thumbnail last) -> HiRED's
            pictures = [pictures[i] for i in layout.crop_order]
    before = model.__dict__.get("hired_config")
    rows = []
    try:
        for name, config in zip(methods, configs):
            hired.apply(model, config)
            with torch.no_grad():
                model(**inputs)
            rows.append(Row(name, model.hired_report.images[0], layout.full_view,
                            None if layout.full_view else layout.token_shape))
    finally:
        hired.remove(model)
        if before is not None:
            hired.apply(model, before)
    return rows, pictures


def save_png(picture: Image.Image, path: str, colors: int | None = None) -> None:
    """Save as PNG; ``colors`` (e.g. 256) quantises to a palette for a much smaller file."""
    if colors:
        picture = picture.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    picture.save(path, format="PNG", optimize=True)
