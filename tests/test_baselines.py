"""Baseline drop policies: exact budgets, adaptive counts, determinism, convex merges, batches."""

import pytest
import torch
from conftest import noise_image
from test_llava_next import inputs_for, llm_sequence_lengths

import hired
from hired import HiREDConfig
from hired.core.view import ImageView
from hired.errors import ConfigError
from hired.policies import ADAPTIVE, FIXED_BUDGET, POLICIES, check_method
from hired.policies.common import lattice, proportional_budgets

NEEDS_KEYS = {name for name, spec in POLICIES.items() if spec.merges}
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
        key_heads=4,
    )


def run(name: str, view: ImageView, seed: int = 0):
    return POLICIES[name](view, HiREDConfig(method=name, seed=seed))


def test_baselines_are_registered_and_unknown_names_are_refused():
    assert set(FIXED_BUDGET) | set(ADAPTIVE) | {"hired", "hired+", "hired+fusion", "hired+dedup"} == set(POLICIES)
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
def test_merges_keep_each_token_and_never_mix_in_padding(name):
    view = random_view(3, budget=144)
    selection = run(name, view)
    w = selection.merge_weights
    assert w is not None and w.shape == (P, N, N)
    assert (w >= 0).all()
    kept = selection.keep.nonzero()
    assert (w[kept[:, 0], kept[:, 1], kept[:, 1]] >= 1).all()  # x_i itself, weight 1 (+ its own share)
    assert (w[~selection.keep] == 0).all()  # dropped rows are unused
    assert (w.sum(1)[~view.valid] == 0).all()  # invalid tokens are never mixed in


def test_prumerge_merge_is_the_reference_formula():
    """x_i + sum_j a_j x_j over the 32 (per 576) most key-similar other valid tokens, unnormalised."""
    view = random_view(6, budget=144)
    selection = run("prumerge-fixed", view)
    w = selection.merge_weights
    unit = torch.nn.functional.normalize(view.keys, dim=-1)
    for p in range(P):
        valid = view.valid[p].nonzero().flatten()
        for i in selection.keep[p].nonzero().flatten()[:20].tolist():  # an independent loop, token by token
            others = valid[valid != i]
            similarity = unit[p, others] @ unit[p, i]
            nearest = others[similarity.topk(32).indices]
            expected = torch.zeros(N)
            expected[nearest] = view.final_scores[p, nearest]
            expected[i] += 1.0
            torch.testing.assert_close(w[p, i], expected)


def test_visionzip_contextual_tokens_are_target_plus_mean_of_assigned():
    view = random_view(4, budget=P * 64)  # 64 per partition before the valid-count split
    selection = run("visionzip", view)
    w = selection.merge_weights
    dominant = (selection.budgets.double() * 54 / 64).round().long()
    metric = torch.nn.functional.normalize(view.keys.view(P, N, 4, D // 4).mean(2), dim=-1)  # heads averaged
    for p in range(P):
        rows = w[p][selection.keep[p]]
        merged = (rows > 0).sum(-1) > 1
        assert int((~merged).sum()) >= int(dominant[p])  # dominant tokens are copied as they are
        contextual = selection.keep[p].nonzero().flatten()[merged]
        for t in contextual.tolist():
            assigned = (w[p, t] > 0).nonzero().flatten()
            assigned = assigned[assigned != t]
            torch.testing.assert_close(w[p, t, t], torch.tensor(1.0))  # the target itself
            torch.testing.assert_close(w[p, t, assigned], torch.full((len(assigned),), 1.0 / len(assigned)))
            targets = selection.keep[p] & ~topk_dominant(view, p, int(dominant[p]))
            similarity = metric[p, assigned] @ metric[p, targets.nonzero().flatten()].T
            assert (targets.nonzero().flatten()[similarity.argmax(-1)] == t).all()  # each went to its nearest target
    used = (w > 0).sum(1)  # every valid token is used by exactly one kept row
    assert (used[view.valid] == 1).all()


def topk_dominant(view, p, count):
    scores = view.final_scores[p].masked_fill(~view.valid[p], -1.0)
    mask = torch.zeros(N, dtype=torch.bool)
    mask[scores.topk(count).indices] = True
    return mask


def test_fixed_prumerge_at_full_budget_merges_nothing():
    view = random_view(7, budget=P * N)
    for name in ("prumerge-fixed", "prumerge+-fixed", "visionzip"):
        selection = run(name, view)
        assert torch.equal(selection.keep & view.valid, view.valid)
        kept = view.valid.nonzero()
        identity = torch.zeros(P, N, N)
        identity[kept[:, 0], kept[:, 1], kept[:, 1]] = 1.0
        torch.testing.assert_close(selection.merge_weights, identity)


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


@pytest.mark.parametrize("name", ["visionzip", "prumerge-fixed"])
def test_merging_acts_on_clip_features_before_the_projector(tiny_llava, name):
    """The language model gets projector(merged CLIP hidden states), as the reference code does,
    not a merge of projected features (the projector is a GELU MLP: the two differ)."""
    model, processor = tiny_llava
    inputs = dict(processor(images=[noise_image(336, 336, 4)], text=["<image>\nwhat"], return_tensors="pt"))
    hidden = []
    handle = model.model.multi_modal_projector.register_forward_pre_hook(lambda _m, args: hidden.append(args[0]))
    try:
        with torch.no_grad():
            model.model.get_image_features(pixel_values=inputs["pixel_values"])
    finally:
        handle.remove()
    hired.apply(model, HiREDConfig(budget=0.2, method=name))
    try:
        with torch.no_grad():
            encoder = model.hired_adapter.encoder
            encoded = encoder.run(encoder.image_call({"pixel_values": inputs["pixel_values"]}))
            features, _ = encoder.cut(encoded)
            selection = encoded.step.selections[0]
            keep = selection.keep[0]
            merged = selection.merge_weights[0][keep] @ hidden[0][0]  # [kept, D_vision]
            expected = model.model.multi_modal_projector(merged)
            after = selection.merge_weights[0][keep] @ model.model.multi_modal_projector(hidden[0][0])
    finally:
        hired.remove(model)
    torch.testing.assert_close(features[0], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(features[0], after, rtol=1e-3, atol=1e-4)
