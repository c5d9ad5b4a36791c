"""Official mode end to end against a transcription of the published HiRED fork.

The transcription below is written from the fork's `HiRED_token_selection`, `HiRED_sub_img_budgets`
and `pack_HiRED_image_features` (hasanar1f/HiRED, transformers/models/llava_next): scores from
eager attention in the model's dtype, the full view's top-k by final-layer CLS attention, the
early layer's marks counted over consecutive slots, floors, selection on the padded grid, masks
unpadded with the image, no newline tokens. What official mode reproduces: those budgets and
masks, exactly. Where it differs on purpose: the packing follows current transformers' corrected
layout (PR 32314); the fork unpacks the sub-image grid as (width, height), so on 1 x N and N x 1
grids it lays out and unpads the sub-images transposed, and unpads with int() where transformers
rounds. On square grids the language model's input is identical.
"""

import pytest
import torch
from conftest import noise_image

import hired
from hired import HiREDConfig
from hired.backends.hf.table import family_for_model
from hired.presets import build_processor
from hired.presets import tiny as tiny_model

RATE, ALPHA = 0.2, 0.5


def cls_rows(model, pixel_values, layer):
    """[crops, N] CLS attention of an encoder layer as the fork's ViT_Attn_Hook computes it: the
    whole attention matrix from the q_proj / k_proj outputs, softmax and head sum in the model's
    dtype, then the CLS row."""
    attn = model.model.vision_tower.encoder.layers[layer].self_attn
    seen = {}
    handles = [attn.q_proj.register_forward_hook(lambda _m, _a, out: seen.__setitem__("q", out)),
               attn.k_proj.register_forward_hook(lambda _m, _a, out: seen.__setitem__("k", out))]
    try:
        with torch.no_grad():
            model.model.vision_tower(pixel_values)
    finally:
        for handle in handles:
            handle.remove()
    heads = model.config.vision_config.num_attention_heads
    B, T, D = seen["q"].shape
    q = seen["q"].view(B, T, heads, D // heads).transpose(1, 2)
    k = seen["k"].view(B, T, heads, D // heads).transpose(1, 2)
    weights = torch.softmax((q @ k.transpose(-2, -1)) * (D // heads) ** -0.5, dim=-1)
    return weights[:, :, 0, 1:].sum(1)


def fork_masks(top, bottom, grid):
    """The fork's HiRED_token_selection for one image: top = early-layer rows, bottom = final-layer
    rows, both [P, N]; returns the [P, N] mask."""
    P, N = bottom.shape
    mask = torch.zeros(P, N, dtype=torch.bool)
    total = int(P * N * RATE)
    full = min(int(total * ALPHA), N)
    sub = min(total - full, (P - 1) * N)
    mask[0, bottom[0].topk(full).indices] = True
    if sub > 0:
        marks = torch.zeros(N, dtype=torch.bool)
        marks[top[0].topk(int(N * (1 - ALPHA))).indices] = True
        counts = marks.reshape(P - 1, -1).sum(-1)  # consecutive slots of the flat full-view grid
        budgets = (counts / counts.sum() * sub).int().clamp(max=N)
        for k, b in enumerate(budgets.tolist()):
            mask[k + 1, bottom[k + 1].topk(b).indices] = True
    return mask


def unpad(tensor, size, rounding):
    """The fork's unpad_image (rounding=int) or transformers' (rounding=round), on [..., H, W]."""
    height, width = size
    current_h, current_w = tensor.shape[-2:]
    if width / height > current_w / current_h:
        new = rounding(height * (current_w / width))
        pad = (current_h - new) // 2
        return tensor[..., pad:current_h - pad, :]
    new = rounding(width * (current_h / height))
    pad = (current_w - new) // 2
    return tensor[..., :, pad:current_w - pad]


def fork_sequence(features, mask, grid, size, as_published):
    """Kept features in the order the language model gets them: the full view's, then the
    sub-images' grid unpadded. as_published: the fork's transposed grid and int() unpadding;
    otherwise transformers' corrected layout (rows, cols) and rounding."""
    N, D = features.shape[1:]
    side = int(N**0.5)
    rows, cols = grid
    view_rows, view_cols = (cols, rows) if as_published else (rows, cols)
    canvas = features[1:].view(view_rows, view_cols, side, side, D).permute(4, 0, 2, 1, 3)
    canvas = canvas.reshape(D, view_rows * side, view_cols * side)
    canvas_mask = mask[1:].view(view_rows, view_cols, side, side).permute(0, 2, 1, 3)
    canvas_mask = canvas_mask.reshape(view_rows * side, view_cols * side)
    rounding = int if as_published else (lambda v: int(round(v, 7)))
    canvas, canvas_mask = unpad(canvas, size, rounding), unpad(canvas_mask, size, rounding)
    subs = canvas.flatten(1)[:, canvas_mask.flatten()].T
    return torch.cat([features[0][mask[0]], subs])


@pytest.fixture(scope="module")
def tiny():
    model, _ = tiny_model("llava_next")
    return model, build_processor("llava_next")


def projected_partitions(model, inputs):
    """[crops, N, D] projector outputs, captured from the model's own encoding."""
    seen = []
    handle = model.model.multi_modal_projector.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.no_grad():
            model.model.get_image_features(pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"])
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("size, square", [((500, 500), True), ((600, 700), True), ((400, 900), False),
                                          ((900, 300), False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_official_mode_feeds_the_forks_selection_in_transformers_layout(tiny, size, square, dtype):
    model, processor = tiny
    model.to(dtype)
    try:
        inputs = dict(processor(images=noise_image(*size, seed=3), text="<image>\nwhat", return_tensors="pt"))
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        pixels = inputs["pixel_values"][0]
        family, _ = family_for_model(model)
        layout = family.layout(model.config, size)
        top, bottom = cls_rows(model, pixels, 0), cls_rows(model, pixels, 1)  # 3-layer tiny ViT: feature layer -2 = 1
        expected_mask = fork_masks(top, bottom, layout.grid)
        features = projected_partitions(model, inputs)
        expected = fork_sequence(features, expected_mask, layout.grid, size, as_published=False)

        hired.apply(model, HiREDConfig(budget=RATE, alpha=ALPHA, allocation="official"))
        with torch.no_grad():
            got, reports = model.hired_adapter.encoder.encode({k: inputs[k] for k in ("pixel_values", "image_sizes")})
        mask = reports[0].keep_mask
        assert mask.sum(1).tolist() == expected_mask.sum(1).tolist()  # the fork's budgets, floors and all
        for p in range(mask.shape[0]):  # the same top scores (in bf16, tied scores may swap places)
            assert torch.equal(bottom[p][mask[p]].sort().values, bottom[p][expected_mask[p]].sort().values)
        if dtype == torch.float32:  # no ties: the very same tokens, and the language model's input
            assert torch.equal(mask, expected_mask)
            torch.testing.assert_close(got[0], expected)
        published = fork_sequence(features, expected_mask, layout.grid, size, as_published=True)
        if square:  # 2x2 grid: the fork's own packing is the same sequence
            torch.testing.assert_close(published, expected)
        else:  # 1x3 / 3x1: the fork lays the sub-images out transposed (the bug PR 32314 fixed)
            assert published.shape != expected.shape or not torch.equal(published, expected)
    finally:
        hired.remove(model)
        model.to(torch.float32)


def test_official_alpha_one_is_refused_as_the_published_code_fails():
    with pytest.raises(hired.ConfigError, match="alpha=1 is undefined in official allocation"):
        HiREDConfig(allocation="official", alpha=1.0)
