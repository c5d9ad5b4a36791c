"""hired+ (the project's own extension of HiRED): exact budgets, coverage geometry, options, adapter."""

import numpy as np
import pytest
import torch
from conftest import noise_image

import hired
from hired import HiREDConfig
from hired.core.allocation import partition_budgets
from hired.core.selection import topk_masks
from hired.core.view import ImageView
from hired.policies import POLICIES
from hired.policies.hired_plus import full_view_coverage, fused_scores, hired_plus_select

GRIDS = [(1, 2), (2, 1), (1, 3), (3, 1), (2, 2)]
SIZES = {(1, 2): (300, 640), (2, 1): (640, 300), (1, 3): (300, 950), (3, 1): (950, 300), (2, 2): (700, 650)}
PROMPT = "<image>\nwhat is the color of the square"


def padded_valid(grid, m, pad, full_tokens=None):
    """[P, m*m] valid masks: the full view whole, the sub-image canvas cut by ``pad`` =
    (top, bottom, left, right) token rows/columns of padding, as LLaVA-NeXT's unpadding does."""
    rows, cols = grid
    top, bottom, left, right = pad
    canvas = torch.zeros(rows * m, cols * m, dtype=torch.bool)
    canvas[top : rows * m - bottom, left : cols * m - right] = True
    sub = canvas.reshape(rows, m, cols, m).permute(0, 2, 1, 3).reshape(rows * cols, m * m)
    full = torch.ones(1, full_tokens or m * m, dtype=torch.bool)
    return torch.cat([full, sub])


def random_view(grid, valid, budget, seed=0):
    gen = torch.Generator().manual_seed(seed)
    P, N = valid.shape
    final = torch.rand(P, N, generator=gen) ** 4  # peaked, like CLS attention
    early = torch.rand(P, N, generator=gen)
    return ImageView(final, early, grid, valid, budget)


def adapter_views(model, processor):
    """(grid, valid) of the real tiny LLaVA-NeXT for each grid shape, from its own unpadding."""
    out = {}
    hired.apply(model, HiREDConfig(budget=0.2, method="hired+"))
    for grid, size in SIZES.items():
        inputs = dict(processor(images=[noise_image(*size)], text=[PROMPT], return_tensors="pt"))
        with torch.no_grad():
            model(**inputs)
        image = model.hired_report.images[0]
        assert tuple(image.grid) == grid
        out[grid] = image.valid.clone()
    hired.remove(model)
    return out


# -- exact budgets -------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("pad", [(0, 0, 0, 0), (1, 2, 0, 0), (0, 0, 2, 1)])
@pytest.mark.parametrize("budget", [1, 7, 40, 100, 10_000])
def test_keeps_exactly_the_budget_of_valid_tokens(grid, pad, budget):
    valid = padded_valid(grid, 8, pad)
    view = random_view(grid, valid, budget, seed=budget)
    for options in ({}, {"fusion": False}, {"dedup": False}, {"widen": 0, "dedup_strength": 0.5}):
        selection = hired_plus_select(view, 0.5, **options)
        expected = min(budget, int(valid.sum()))
        assert int(selection.keep.sum()) == expected
        assert not (selection.keep & ~valid).any()
        assert selection.keep.sum(1).tolist() == selection.budgets.tolist()
        # phase 1 is HiRED's exact mode, unchanged
        assert torch.equal(selection.budgets, partition_budgets(view.init_scores[0], grid, budget, 0.5, "exact", valid))


def test_exact_budget_on_the_real_models_unpadded_masks(model_next):
    model, processor = model_next
    views = adapter_views(model, processor)
    assert set(views) == set(GRIDS)
    assert all((~valid[1:]).any() for valid in views.values())  # every picture loses tokens to unpadding
    for grid, valid in views.items():
        for budget in (1, 29, 0.1, 0.2, 0.4):
            count = budget if isinstance(budget, int) else round(budget * valid.numel())
            selection = hired_plus_select(random_view(grid, valid, count, seed=count), 0.5)
            assert int(selection.keep.sum()) == min(count, int(valid.sum()))
            assert not (selection.keep & ~valid).any()


# -- coverage geometry against pixel rasterisation -----------------------------------------------


def brute_coverage(keep_sub, grid, g, valid_sub, widen, samples=240):
    """Independent coverage: widen with explicit neighbour loops, rasterise the picture region of
    the canvas and sample each full-view cell at ``samples`` x ``samples`` points."""
    rows, cols = grid
    M = keep_sub.shape[1]
    m = int(round(M**0.5))
    keep = keep_sub.numpy().reshape(rows, cols, m, m)
    ok = valid_sub.numpy().reshape(rows, cols, m, m)
    wide = np.zeros_like(keep)
    for r in range(rows):
        for c in range(cols):
            for y, x in zip(*np.nonzero(keep[r, c])):
                wide[r, c, max(0, y - widen) : y + widen + 1, max(0, x - widen) : x + widen + 1] = True
    canvas = (wide & ok).transpose(0, 2, 1, 3).reshape(rows * m, cols * m)
    region = ok.transpose(0, 2, 1, 3).reshape(rows * m, cols * m)
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    t = (np.arange(g * samples) + 0.5) / (g * samples)  # sample points over the full view, [0, 1)
    py = np.floor(y0 + t * (y1 - y0)).astype(int)
    px = np.floor(x0 + t * (x1 - x0)).astype(int)
    hit = canvas[py[:, None], px[None, :]].astype(float)
    return torch.from_numpy(hit.reshape(g, samples, g, samples).mean((1, 3)).reshape(-1))


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("pad", [(0, 0, 0, 0), (1, 3, 0, 0), (0, 0, 3, 2), (2, 1, 1, 0)])
@pytest.mark.parametrize("widen", [0, 1, 2])
@pytest.mark.parametrize("g", [8, 6])
def test_coverage_matches_a_pixel_rasterisation(grid, pad, widen, g):
    m = 8
    valid = padded_valid(grid, m, pad)[1:]
    gen = torch.Generator().manual_seed(hash((grid, pad, widen)) % 1000)
    keep = (torch.rand(valid.shape, generator=gen) < 0.15) & valid
    coverage = full_view_coverage(keep, grid, g * g, valid, widen)
    expected = brute_coverage(keep, grid, g, valid, widen)
    assert coverage.shape == (g * g,)
    torch.testing.assert_close(coverage.double(), expected.double(), atol=1.5 / 240 * 2, rtol=0)


def test_coverage_on_the_real_models_unpadded_masks(model_next):
    for grid, valid in adapter_views(*model_next).items():
        n = valid.shape[1]
        g = int(round(n**0.5))
        keep = (torch.rand(valid[1:].shape, generator=torch.Generator().manual_seed(1)) < 0.1) & valid[1:]
        for widen in (0, 1):
            expected = brute_coverage(keep, grid, g, valid[1:], widen, samples=60)
            torch.testing.assert_close(full_view_coverage(keep, grid, n, valid[1:], widen), expected, atol=0.04, rtol=0)


def test_coverage_extremes_and_widening():
    grid, valid = (1, 2), padded_valid((1, 2), 8, (2, 2, 0, 0))[1:]
    nothing = full_view_coverage(torch.zeros_like(valid), grid, 64, valid, 1)
    assert torch.equal(nothing, torch.zeros(64, dtype=torch.float64))
    torch.testing.assert_close(full_view_coverage(valid, grid, 64, valid, 0), torch.ones(64, dtype=torch.float64))
    keep = torch.zeros_like(valid)
    keep[0, 4 * 8 + 3] = True  # one token in the left sub-image
    narrow = full_view_coverage(keep, grid, 64, valid, 0)
    wide = full_view_coverage(keep, grid, 64, valid, 1)
    assert (wide >= narrow).all() and (wide > narrow).any()
    # the single token covers 1 of the 16 x 4 picture tokens: 1/64 of the full view's area
    assert narrow.sum().item() == pytest.approx(1.0)
    assert wide.sum().item() == pytest.approx(9.0)


# -- each option does what it says ---------------------------------------------------------------


def test_fusion_off_ranks_by_final_scores_alone():
    grid, valid = (2, 2), padded_valid((2, 2), 8, (0, 0, 1, 1))
    view = random_view(grid, valid, 60)
    selection = hired_plus_select(view, 0.5, fusion=False, dedup=False)
    assert torch.equal(selection.keep, topk_masks(view.final_scores, selection.budgets, valid))
    # with the early layer fused in, the ranking changes
    assert not torch.equal(hired_plus_select(view, 0.5, dedup=False).keep, selection.keep)


def test_fusion_normalizes_each_partition_and_weights_the_layers():
    grid, valid = (1, 2), padded_valid((1, 2), 8, (1, 1, 0, 0))
    view = random_view(grid, valid, 40)
    fused = fused_scores(view.final_scores * 100, view.init_scores, valid, 1.0, 0.5)
    assert (fused[~valid] == 0).all()
    torch.testing.assert_close(fused.sum(1), torch.full((3,), 1.5, dtype=torch.float64))
    selection = hired_plus_select(view, 0.5, final_weight=1.0, early_weight=0.5, dedup=False)
    assert torch.equal(selection.keep, topk_masks(fused, selection.budgets, valid))
    early_only = hired_plus_select(view, 0.5, final_weight=0.0, early_weight=1.0, dedup=False)
    assert torch.equal(early_only.keep, topk_masks(view.init_scores, selection.budgets, valid))


def test_dedup_off_is_top_k_of_fused_scores_and_strength_zero_is_no_dedup():
    grid, valid = (2, 2), padded_valid((2, 2), 8, (0, 0, 0, 0))
    view = random_view(grid, valid, 80, seed=3)
    plain = hired_plus_select(view, 0.5, dedup=False)
    fused = fused_scores(view.final_scores, view.init_scores, valid, 1.0, 1.0)
    assert torch.equal(plain.keep, topk_masks(fused, plain.budgets, valid))
    assert torch.equal(hired_plus_select(view, 0.5, dedup_strength=0.0).keep, plain.keep)
    deduped = hired_plus_select(view, 0.5)
    assert torch.equal(deduped.keep[1:], plain.keep[1:])  # sub-images are not affected
    assert not torch.equal(deduped.keep[0], plain.keep[0])


def test_dedup_moves_the_full_view_budget_off_covered_areas():
    grid, m = (1, 2), 8
    valid = padded_valid(grid, m, (0, 0, 0, 0))
    final = torch.full((3, 64), 0.01)
    final[0].view(8, 8)[:, :4] = 1.0  # the full view's attention is on the left half of the picture
    final[1] = 1.0  # the left sub-image's tokens rank above everything else
    view = ImageView(final, torch.ones(3, 64), grid, valid, 48)
    plain = hired_plus_select(view, 0.5, fusion=False, dedup=False)
    deduped = hired_plus_select(view, 0.5, fusion=False, widen=0)
    left = torch.zeros(8, 8, dtype=torch.bool)
    left[:, :4] = True
    assert plain.budgets.tolist() == [24, 12, 12]
    # the left sub-image keeps 12 of its 64 tokens (row 0 and half of row 1); without
    # de-duplication the full view spends its 24 tokens on the same left half
    assert plain.keep[0].view(8, 8)[left].sum() == 24
    coverage = full_view_coverage(plain.keep[1:], grid, 64, valid[1:], 0)
    assert (deduped.keep[0] & (coverage >= 1.0)).sum() == 0  # fully covered tokens are dropped first
    assert int(deduped.keep[0].sum()) == 24


def test_widen_changes_the_full_view_selection():
    grid, valid = (2, 2), padded_valid((2, 2), 8, (0, 0, 0, 0))
    changed = False
    for seed in range(5):
        view = random_view(grid, valid, 60, seed=seed)
        narrow, wide = hired_plus_select(view, 0.5, widen=0), hired_plus_select(view, 0.5, widen=1)
        changed |= not torch.equal(narrow.keep, wide.keep)
    assert changed


def test_single_partition_is_fusion_only():
    valid = torch.ones(1, 64, dtype=torch.bool)
    valid[0, :5] = False
    view = random_view((1, 1), valid, 20)
    selection = hired_plus_select(view, 0.5)
    fused = fused_scores(view.final_scores, view.init_scores, valid, 1.0, 1.0)
    assert torch.equal(selection.keep, topk_masks(fused, torch.tensor([20]), valid))
    assert torch.equal(selection.keep, hired_plus_select(view, 0.5, dedup=False).keep)
    assert int(selection.keep.sum()) == 20


def test_registered_names_and_their_options():
    assert {"hired+", "hired+fusion", "hired+dedup", "hired"} <= set(POLICIES)
    grid, valid = (1, 3), padded_valid((1, 3), 8, (2, 2, 0, 0))
    view = random_view(grid, valid, 50, seed=7)
    config = HiREDConfig(budget=50, alpha=0.4)
    assert torch.equal(POLICIES["hired+"](view, config).keep, hired_plus_select(view, 0.4).keep)
    assert torch.equal(POLICIES["hired+fusion"](view, config).keep, hired_plus_select(view, 0.4, dedup=False).keep)
    assert torch.equal(POLICIES["hired+dedup"](view, config).keep, hired_plus_select(view, 0.4, fusion=False).keep)


# -- through the real adapter --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hired+", "hired+fusion", "hired+dedup"])
@pytest.mark.parametrize("budget", [0.1, 0.2, 37])
def test_through_the_adapter_kept_equals_budget_and_reaches_the_language_model(model_next, method, budget):
    model, processor = model_next
    hired.apply(model, HiREDConfig(method=method, budget=budget))
    for size in [(400, 800), (900, 300), (700, 700)]:
        inputs = dict(processor(images=[noise_image(*size, seed=2)], text=[PROMPT], return_tensors="pt"))
        text_tokens = int((inputs["input_ids"] != model.config.image_token_id).sum())
        seen = []
        handle = model.model.language_model.register_forward_pre_hook(
            lambda _m, args, kwargs, seen=seen: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
        )
        try:
            with torch.no_grad():
                model(**inputs)
        finally:
            handle.remove()
        image = model.hired_report.images[0]
        expected = min(budget if isinstance(budget, int) else max(1, round(budget * image.total)), image.valid_tokens)
        assert image.kept == expected
        assert image.kept_per_partition == image.partition_budgets
        assert seen == [text_tokens + image.llm_tokens]


def test_through_the_llava_adapter_one_partition(tiny_llava):
    model, processor = tiny_llava
    hired.apply(model, HiREDConfig(method="hired+", budget=0.1))
    try:
        inputs = dict(processor(images=[noise_image(336, 336)], text=[PROMPT], return_tensors="pt"))
        with torch.no_grad():
            model(**inputs)
        image = model.hired_report.images[0]
        assert image.partitions == 1 and image.kept == max(1, round(0.1 * image.total))
        assert model.hired_report.llm_image_tokens == image.kept
    finally:
        hired.remove(model)
