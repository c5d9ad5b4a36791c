"""Pure algorithms: apportioning, region content, exact and official selection."""

import itertools

import pytest
import torch

from hired import select_tokens
from hired.core.allocation import apportion, exact_budgets, partition_budgets, subimage_content
from hired.core.selection import topk_masks

N = 576
GRIDS = [(1, 2), (2, 1), (2, 2), (1, 3), (3, 1)]


def reference_official(final, init, grid, ratio, alpha):
    """The published HiRED selection, written from its description with plain loops."""
    P = final.shape[0]
    rows, cols = grid
    total = int(P * N * ratio)
    full = min(int(total * alpha), N)
    sub = min(total - full, (P - 1) * N)
    mask = torch.zeros(P, N, dtype=torch.bool)
    mask[0, torch.topk(final[0], full).indices] = True
    if sub > 0:
        marked = torch.zeros(N, dtype=torch.bool)
        marked[torch.topk(init, int(N * (1 - alpha))).indices] = True
        counts = marked.reshape(rows, cols, N // (rows * cols)).sum(-1).reshape(-1)
        for k in range(P - 1):
            share = min(int((counts[k] / counts.sum() * sub).item()), N)
            mask[k + 1, torch.topk(final[k + 1], share).indices] = True
    return mask


def random_valid(grid, generator):
    """A padding pattern like LLaVA-NeXT's unpadding: whole rows or columns of the canvas off."""
    rows, cols = grid
    canvas = torch.ones(rows * 24, cols * 24, dtype=torch.bool)
    pad = int(torch.randint(0, 10, (1,), generator=generator))
    if torch.rand(1, generator=generator) < 0.5:
        canvas[:pad] = False
        canvas[canvas.shape[0] - pad :] = False
    else:
        canvas[:, :pad] = False
        canvas[:, canvas.shape[1] - pad :] = False
    subs = canvas.view(rows, 24, cols, 24).permute(0, 2, 1, 3).reshape(rows * cols, N)
    return torch.cat([torch.ones(1, N, dtype=torch.bool), subs])


def test_apportion_sums_exactly_and_respects_caps():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        k = int(torch.randint(1, 7, (1,), generator=g))
        weights = torch.rand(k, generator=g) * (torch.rand(k, generator=g) > 0.2)
        caps = torch.randint(0, 600, (k,), generator=g)
        total = int(torch.randint(0, 3000, (1,), generator=g))
        alloc = apportion(weights, caps, total)
        assert int(alloc.sum()) == min(total, int(caps.sum()))
        assert bool((alloc <= caps).all()) and bool((alloc >= 0).all())


def test_apportion_is_proportional_when_uncapped():
    alloc = apportion(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1000, 1000, 1000]), 400)
    assert alloc.tolist() == [100, 200, 100]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_exact_mode_keeps_exactly_the_budget_and_only_valid_tokens(grid, ratio, alpha):
    g = torch.Generator().manual_seed(hash((grid, ratio, alpha)) % 2**31)
    P = grid[0] * grid[1] + 1
    valid = random_valid(grid, g)
    final = torch.rand(P, N, generator=g)
    init = torch.rand(N, generator=g)
    budget = max(1, round(P * N * ratio))
    keep = select_tokens(final, init, grid, budget, alpha, "exact", valid)
    assert int(keep.sum()) == min(budget, int(valid.sum()))
    assert not bool((keep & ~valid).any())


@pytest.mark.parametrize("budget", [1, 2, 7])
def test_tiny_budgets_are_exact(budget):
    final, init = torch.rand(5, N), torch.rand(N)
    keep = select_tokens(final, init, (2, 2), budget, 0.5)
    assert int(keep.sum()) == budget


def test_selection_keeps_the_highest_scores_in_each_partition():
    g = torch.Generator().manual_seed(1)
    final = torch.rand(5, N, generator=g)
    keep = select_tokens(final, torch.rand(N, generator=g), (2, 2), 576, 0.5)
    for p in range(5):
        kept = final[p][keep[p]]
        dropped = final[p][~keep[p]]
        if kept.numel() and dropped.numel():
            assert float(kept.min()) >= float(dropped.max())


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.5])
@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_official_mode_matches_an_independent_implementation(grid, ratio, alpha):
    g = torch.Generator().manual_seed(hash((grid, ratio, alpha, "o")) % 2**31)
    P = grid[0] * grid[1] + 1
    final = torch.rand(P, N, generator=g)
    init = torch.rand(N, generator=g)
    keep = select_tokens(final, init, grid, int(P * N * ratio), alpha, "official")
    assert torch.equal(keep, reference_official(final, init, grid, ratio, alpha))


def test_official_mode_when_the_tokens_do_not_divide_into_the_slots():
    # 64 tokens (the demo model's 8 x 8 crops) over a 1 x 3 grid: slots of 22, 21 and 21 tokens.
    init = torch.zeros(64)
    init[:22] = 1.0  # the 32 marked tokens: all 22 of the first slot, 10 of the second
    init[22:32] = 0.5
    budgets = partition_budgets(init, (1, 3), 100, 0.5, mode="official", num_partitions=4, tokens=64)
    assert budgets.tolist() == [50, int(22 / 32 * 50), int(10 / 32 * 50), 0]
    keep = select_tokens(torch.rand(4, 64), init, (1, 3), 100, 0.5, "official")
    assert keep.sum(1).tolist() == budgets.tolist()


def test_content_follows_regions_not_flat_slots():
    # Attention only on the full view's left half: in a 2x2 grid the two left sub-images hold
    # all content. The published slot counting spreads it over all four.
    init = torch.zeros(24, 24)
    init[:, :12] = 1.0
    content = subimage_content(init.flatten(), (2, 2))
    assert torch.allclose(content, torch.tensor([144.0, 0.0, 144.0, 0.0], dtype=torch.float64))
    budgets = partition_budgets(init.flatten(), (2, 2), 576, 0.5)
    assert budgets.tolist() == [288, 144, 0, 144, 0]
    official = partition_budgets(init.flatten(), (2, 2), 576, 0.5, mode="official")
    assert official[1:].tolist() == [72, 72, 72, 72]  # flat slots ignore left vs right


def test_content_maps_the_full_view_onto_the_unpadded_picture():
    # A 2:1 picture in a 1x2 grid... padded vertically inside a 2x2 canvas: only the middle
    # canvas rows hold picture. Full-view row 0 must land in the top sub-images.
    valid = torch.zeros(48, 48, dtype=torch.bool)
    valid[12:36] = True
    subs = valid.view(2, 24, 2, 24).permute(0, 2, 1, 3).reshape(4, N)
    init = torch.zeros(24, 24)
    init[:12] = 1.0  # top half of the picture = canvas rows 12..24 = top sub-images only
    content = subimage_content(init.flatten(), (2, 2), subs)
    assert content[2:].sum() == 0 and content[:2].sum() == pytest.approx(288.0)


def test_full_view_share_follows_alpha():
    budgets = exact_budgets(100, 0.3, torch.ones(4), torch.full((5,), N))
    assert int(budgets[0]) == 30 and int(budgets.sum()) == 100


def test_topk_masks_with_budget_above_valid_keeps_only_valid():
    valid = torch.zeros(1, 10, dtype=torch.bool)
    valid[0, :3] = True
    keep = topk_masks(torch.rand(1, 10), torch.tensor([8]), valid)
    assert torch.equal(keep, valid)


def test_every_grid_and_budget_combination_is_consistent():
    for grid, budget in itertools.product(GRIDS, [1, 100, 1000, 5000]):
        P = grid[0] * grid[1] + 1
        keep = select_tokens(torch.rand(P, N), torch.rand(N), grid, budget, 0.5)
        assert int(keep.sum()) == min(budget, P * N)


def test_a_full_sub_image_overflows_to_the_other_sub_images_not_the_full_view():
    # a 3x1 grid whose last sub-image is mostly padding but holds most of the content
    capacity = torch.tensor([576, 576, 576, 100])
    content = torch.tensor([1.0, 1.0, 20.0])
    budgets = exact_budgets(922, 0.5, content, capacity)
    assert int(budgets.sum()) == 922
    assert int(budgets[0]) == 461  # alpha of the budget, as asked
    assert int(budgets[3]) == 100  # the small sub-image is full
    assert int(budgets[1]) + int(budgets[2]) == 361 and abs(int(budgets[1]) - int(budgets[2])) <= 1
    # only what no sub-image can hold goes to the full view, and the other way round
    assert exact_budgets(1500, 0.1, content, capacity).tolist()[0] == 1500 - 1252  # not 150
    assert exact_budgets(1400, 0.9, content, capacity).tolist()[0] == 576
