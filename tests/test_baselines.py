"""Baseline drop policies: exact budgets, adaptive counts, determinism, convex merges, batches."""

import pytest
import torch
from conftest import noise_image
from test_llava_next import inputs_for, llm_sequence_lengths

import hired
from hired import HiREDConfig
from hired.core.view import ImageView
from hired.errors import ConfigError
from hired.policies import ADAPTIVE, FIXED_BUDGET, NEEDS_KEYS, POLICIES, check_method
from hired.policies.common import lattice, proportional_budgets

P, N, D = 5, 576, 16


def random_view(seed: int, budget: int, invalid_rows: int = 3) -> ImageView:
    """Real LLaVA-NeXT geometry (full view + 2x2 sub-images of 24x24 tokens); the sub-images lose
    ``invalid_rows`` rows of tokens to unpadding, as for a picture wider than tall."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(P, 24, 24, dtype=torch.bool)
    valid[1:3, :invalid_rows] = False  # top row of sub-images: padding above the picture
    valid[3:5, 24 - invalid_rows:] = False  # bottom row: padding below
    scores = torch.rand(P, N, generator=g) ** 4  # a few tokens stand out, as CLS attention does
    return ImageView(
        final_scores=scores / scores.sum(1, keepdim=True),
        init_scores=torch.rand(P, N, generator=g),
        grid=(2, 2),
        valid=valid.view(P, N),
        budget=budget,
        keys=torch.randn(P, N, D, generator=g),
    )


def run(name: str, view: ImageView, seed: int = 0):
    return POLICIES[name](view, HiREDConfig(method=name, seed=seed))


def test_baselines_are_registered_and_unknown_names_are_refused():
    assert set(FIXED_BUDGET) | set(ADAPTIVE) | {"hired"} == set(POLICIES)
    assert {"prumerge", "prumerge+", "prumerge-fixed", "prumerge+-fixed", "visionzip"} <= NEEDS_KEYS
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; known methods: .*prumerge\+.*visionzip"):
        check_method("nope")


@pytest.mark.parametrize("name", FIXED_BUDGET)
@pytest.mark.parametrize("budget", [1, 7, 115, 576, 2000, 5 * N])
def test_fixed_budget_methods_keep_exactly_the_budget_of_valid_tokens(name, budget):
    torch.manual_seed(0)
    view = random_view(budget, budget)
    selection = run(name, view)
    expected = min(budget, int(view.valid.sum()))
    assert int(selection.keep.sum()) == expected
    assert not (selection.keep & ~view.valid).any()  # invalid tokens are never kept
    assert selection.budgets.tolist() == selection.keep.sum(1).tolist()
    assert int(selection.budgets.sum()) == expected


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_prumerge_chooses_its_own_count(name):
    view = random_view(1, budget=10)
    selection = run(name, view)
    counts = selection.keep.sum(1)
    assert selection.budgets.tolist() == counts.tolist()  # the report shows the chosen count
    assert (counts >= 1).all() and int(counts.sum()) != 10
    assert not (selection.keep & ~view.valid).any()
    # the IQR outliers: every kept prumerge token lies above Q3 + 1.5 IQR of its partition
    if name == "prumerge":
        for p in range(P):
            row = view.final_scores[p, view.valid[p]].double()
            q1, q3 = torch.quantile(row, 0.25), torch.quantile(row, 0.75)
            kept = view.final_scores[p, selection.keep[p]].double()
            assert (kept > q3 + 1.5 * (q3 - q1)).all()


def test_prumerge_plus_adds_uniform_samples_to_the_outliers():
    view = random_view(2, budget=10)
    plain, plus = run("prumerge", view), run("prumerge+", view)
    assert (plain.keep <= plus.keep).all()
    ratio = plus.keep.sum(1).double() / plain.keep.sum(1).double()
    assert (ratio > 2).all() and (ratio < 5).all()  # about three uniform samples per outlier


@pytest.mark.parametrize("name", sorted(NEEDS_KEYS))
def test_merges_are_convex_combinations(name):
    view = random_view(3, budget=144)
    selection = run(name, view)
    w = selection.merge_weights
    assert w is not None and w.shape == (P, N, N)
    assert (w >= 0).all()
    kept_rows = w[selection.keep]
    torch.testing.assert_close(kept_rows.sum(-1), torch.ones(kept_rows.shape[0]))
    assert (w[~selection.keep] == 0).all()  # dropped rows are unused
    assert (w.sum(1)[~view.valid] == 0).all()  # invalid tokens are never mixed in


def test_visionzip_splits_dominant_and_contextual_as_the_paper():
    view = random_view(4, budget=P * 64)  # 64 per partition before the valid-count split
    selection = run("visionzip", view)
    w = selection.merge_weights
    merged_rows = (w[selection.keep] > 0).sum(-1) > 1
    identity_rows = int((~merged_rows).sum())
    dominant = (selection.budgets.double() * 54 / 64).round().sum()
    assert identity_rows >= int(dominant)  # dominant rows copy their own token
    assert int(merged_rows.sum()) <= int((selection.budgets - (selection.budgets.double() * 54 / 64).round()).sum())
    # every non-kept valid token is absorbed by exactly one contextual target
    used = (w > 0).sum(1)  # [P, N]: how many kept rows use each token
    assert (used[view.valid] == 1).all()


def test_random_is_deterministic_for_a_seed_and_differs_across_seeds():
    view = random_view(5, budget=300)
    a, b, c = run("random", view, seed=1), run("random", view, seed=1), run("random", view, seed=2)
    assert torch.equal(a.keep, b.keep)
    assert not torch.equal(a.keep, c.keep)
    for name in sorted(set(FIXED_BUDGET) | set(ADAPTIVE)):
        assert torch.equal(run(name, view).keep, run(name, view).keep)


def test_spatial_spreads_tokens_over_the_grid_and_budgets_follow_valid_tokens():
    valid = torch.ones(N, dtype=torch.bool)
    picked = lattice(valid, 144)  # a 12 x 12 lattice of a 24 x 24 grid: every other row and column
    ys, xs = picked // 24, picked % 24
    assert picked.numel() == 144 and set(ys.tolist()) == set(range(1, 24, 2)) == set(xs.tolist())
    budgets = proportional_budgets(random_view(0, 0).valid, 100)
    assert budgets.sum() == 100 and budgets[0] > budgets[1]  # the full view has more valid tokens


METHODS = sorted(set(FIXED_BUDGET) | set(ADAPTIVE))


@pytest.mark.parametrize("name", METHODS)
def test_through_the_adapter_in_one_batch_of_different_sizes(model_next, name):
    model, processor = model_next
    images = [noise_image(400, 800, seed=1), noise_image(900, 300, seed=2)]
    inputs = inputs_for(processor, images)
    hired.apply(model, HiREDConfig(budget=0.2, method=name))
    with torch.no_grad():
        lengths = llm_sequence_lengths(model, lambda: model.generate(**inputs, max_new_tokens=2, do_sample=False))
    report = model.hired_report
    assert len(report.images) == 2
    for image in report.images:
        assert image.kept_per_partition == image.partition_budgets
        assert not (image.keep_mask & ~image.valid).any()
        if name in FIXED_BUDGET:
            assert image.kept == min(round(0.2 * image.total), image.valid_tokens)
        else:
            assert 0 < image.kept < image.valid_tokens
    assert report.llm_image_tokens == sum(r.llm_tokens for r in report.images)
    width = inputs["input_ids"].shape[1]  # each row loses its dropped placeholders, rows re-padded
    assert lengths[0] == max(width - r.llm_tokens_full + r.llm_tokens for r in report.images)
    masks = [r.keep_mask for r in report.images]
    for image, mask in zip(images, masks):  # a batch keeps what each image keeps alone
        with torch.no_grad():
            model(**inputs_for(processor, image))
        assert torch.equal(model.hired_report.images[0].keep_mask, mask)


@pytest.mark.parametrize("name", ["spatial", "prumerge+-fixed", "visionzip"])
def test_single_image_kept_equals_budget_and_reaches_the_language_model(model_next, name):
    model, processor = model_next
    inputs = inputs_for(processor, noise_image(336, 336, seed=3))
    text_tokens = int((inputs["input_ids"] != model.config.image_token_id).sum())
    hired.apply(model, HiREDConfig(budget=0.2, method=name))
    with torch.no_grad():
        lengths = llm_sequence_lengths(model, lambda: model(**inputs))
    image = model.hired_report.images[0]
    assert image.kept == round(0.2 * image.total)
    assert model.hired_report.llm_image_tokens == image.llm_tokens
    assert lengths == [text_tokens + image.llm_tokens]


@pytest.mark.parametrize("name", ["random", "prumerge", "visionzip"])
def test_llava_one_partition(tiny_llava, name):
    model, processor = tiny_llava
    inputs = dict(processor(images=[noise_image(300, 300, 1)], text=["<image>\nwhat"], return_tensors="pt"))
    hired.apply(model, HiREDConfig(budget=64, method=name))
    try:
        with torch.no_grad():
            model(**inputs)
        image = model.hired_report.images[0]
        assert image.partitions == 1 and model.hired_report.llm_image_tokens == image.kept
        if name != "prumerge":
            assert image.kept == 64
    finally:
        hired.remove(model)
