"""Qwen2.5-VL / Qwen3-VL specifics beyond the family contract: received scores against a plain
softmax(qK^T) over each image (Qwen2.5-VL's window order undone), kept tokens keeping the
unmodified model's 3-D positions (prompt and decoding), Qwen3-VL's deepstack features cut with
the same mask, region budgets, planned tokens from the processor's pixels, multi-image prompts,
videos refused, and a saved preset folder loading through hired.from_pretrained."""

import pytest
import torch
from conftest import noise_image

import hired
from hired import HiREDConfig
from hired.core.allocation import region_budgets
from hired.errors import InputError
from hired.families import FAMILIES
from hired.presets import build_model, build_processor, record_of

NAMES = {"qwen2_5_vl": "tiny-qwen2.5-vl", "qwen3_vl": "tiny-qwen3-vl"}


@pytest.fixture(scope="module", params=sorted(NAMES))
def qwen(request):
    name = request.param
    model = build_model(NAMES[name], seed=0)
    yield name, model, build_processor(name)
    hired.remove(model)


def inputs_for(processor, family, sizes, seed=0, images_per_prompt=1):
    images = [noise_image(h, w, seed + i) for i, (h, w) in enumerate(sizes)]
    placeholder = record_of(family).placeholder
    prompts = [" ".join([placeholder] * images_per_prompt) + "\nwhat is the color of the square"] \
        * (len(images) // images_per_prompt)
    return dict(processor(images=images, text=prompts, return_tensors="pt", padding=True))


def reference_received(model, inputs, layer):
    """Each image's mean received attention per LM token (2 x 2 patch groups summed), model order,
    from a plain softmax(q K^T / sqrt(d)) over the whole image with the block's own rotary
    embedding, the block's window permutation undone with transformers' own window index."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    visual = model.model.visual
    seen = {}

    def grab(module, args, kwargs):
        seen["hidden"] = args[0]
        seen["rope"] = kwargs["position_embeddings"]

    handle = visual.blocks[layer].attn.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    handle.remove()
    attn = visual.blocks[layer].attn
    T = seen["hidden"].shape[0]
    q, k, _ = attn.qkv(seen["hidden"]).reshape(T, 3, attn.num_heads, -1).unbind(1)
    q, k = apply_rotary_pos_emb_vision(q, k, *seen["rope"])
    grid = inputs["image_grid_thw"]
    if hasattr(visual, "window_size"):  # Qwen2.5-VL: blocks hold the patches in window order
        from transformers.vision_utils import get_vision_window_index

        window, _ = get_vision_window_index(grid, visual.spatial_merge_size, visual.window_size, visual.patch_size)
        patch_order = (window[:, None] * 4 + torch.arange(4)).flatten()  # window slot -> model-order patch
    else:
        patch_order = torch.arange(T)
    q_model, k_model = torch.empty_like(q), torch.empty_like(k)
    q_model[patch_order], k_model[patch_order] = q, k
    out, start = [], 0
    for t, h, w in grid.tolist():
        n = t * h * w
        qi, ki = q_model[start:start + n].transpose(0, 1).float(), k_model[start:start + n].transpose(0, 1).float()
        probs = (qi @ ki.transpose(-1, -2) * qi.shape[-1] ** -0.5).softmax(-1)  # [H, n, n]
        out.append(probs.mean((0, 1)).view(-1, 4).sum(-1))  # [n / 4] per LM token
        start += n
    return out


def test_scores_are_the_received_attention_of_the_whole_image_in_model_order(qwen):
    family_name, model, processor = qwen
    family = FAMILIES[family_name]
    inputs = inputs_for(processor, family_name, [(300, 900), (500, 400)])  # two images packed
    patch = hired.apply(model, HiREDConfig(budget=0.2)).hired_adapter
    layer = patch.encoder.recipe.requests["final"].layer
    with torch.no_grad(), patch.encoder.scoring() as recorder:
        model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    hired.remove(model)
    expected = reference_received(model, inputs, layer)
    for i, grid in enumerate(inputs["image_grid_thw"].tolist()):
        layout = family.layout(model.config, hired.families.ImageInput(grid=tuple(grid)))
        per_token = layout.partition_scores(recorder.scores["final"][i]).flatten()[layout.positions]  # raster
        torch.testing.assert_close(per_token, expected[i], rtol=1e-4, atol=1e-7)


def test_qwen25_scores_only_at_full_attention_layers():
    from hired.recipe import Recipe

    model = build_model(NAMES["qwen2_5_vl"])
    recipe = Recipe.build(model.config, HiREDConfig())
    assert (recipe.requests["init"].layer, recipe.requests["final"].layer) == (1, 3)  # fullatt_block_indexes
    with pytest.raises(hired.ConfigError, match="windows"):
        Recipe.build(model.config, HiREDConfig(init_layer=0))


def llm_positions(model):
    """Hook on the language model: the position_ids and deepstack features of each call."""
    calls = []

    def grab(module, args, kwargs):
        calls.append({"position_ids": kwargs["position_ids"].clone(),
                      "deepstack": [d.clone() for d in kwargs.get("deepstack_visual_embeds") or []]})

    return calls, model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)


def test_kept_tokens_and_text_keep_the_unmodified_positions_and_decoding_continues(qwen):
    family_name, model, processor = qwen
    family = FAMILIES[family_name]
    inputs = inputs_for(processor, family_name, [(300, 900)])
    grid = tuple(inputs["image_grid_thw"][0].tolist())
    layout = family.layout(model.config, hired.families.ImageInput(grid=grid))
    hired.remove(model)
    full_calls, handle = llm_positions(model)
    try:
        with torch.no_grad():
            full_tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    finally:
        handle.remove()
    hired.apply(model, HiREDConfig(budget=0.3))
    short_calls, handle = llm_positions(model)
    try:
        with torch.no_grad():
            short_tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    finally:
        handle.remove()
    report = model.hired_report.images[0]
    hired.remove(model)
    full = full_calls[0]["position_ids"][-3:, 0]  # [3, L] (t, h, w) rows of the prompt
    short = short_calls[0]["position_ids"][-3:, 0]
    ids = inputs["input_ids"][0]
    is_image = ids == model.config.image_token_id
    kept_image = report.keep_mask.flatten()[layout.positions]  # raster order, as the prompt holds them
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[is_image] = kept_image
    assert int(kept_image.sum()) == report.kept < int(is_image.sum())
    torch.testing.assert_close(short, full[:, keep])  # kept image tokens and all text: unmodified positions
    start = int(full[0, is_image].min())
    torch.testing.assert_close(full[:, is_image] - torch.tensor([start, start, start])[:, None],
                               family.rotary_positions(model.config, layout))
    # decoding: each new token's position as in the unmodified model (the full prompt's max + 1, + 2, ...)
    for full_step, short_step in zip(full_calls[1:], short_calls[1:]):
        torch.testing.assert_close(short_step["position_ids"][-3:], full_step["position_ids"][-3:])
    assert len(short_calls) == len(full_calls) == 4
    assert short_tokens.shape == full_tokens.shape
    if family_name == "qwen3_vl":  # deepstack features: the kept tokens' rows of the unmodified ones
        assert len(short_calls[0]["deepstack"]) == len(full_calls[0]["deepstack"]) == 2
        for cut, whole in zip(short_calls[0]["deepstack"], full_calls[0]["deepstack"]):
            torch.testing.assert_close(cut, whole[kept_image])


def test_budget_one_through_the_shortening_path_gives_the_unmodified_tokens(qwen):
    """An int budget over all tokens runs the full prepare path (positions given explicitly)."""
    family_name, model, processor = qwen
    inputs = inputs_for(processor, family_name, [(300, 900), (640, 480)])
    hired.remove(model)
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        hired.apply(model, HiREDConfig(budget=10**6))
        patched_logits = model(**inputs).logits
        patched_tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    hired.remove(model)
    torch.testing.assert_close(patched_logits, logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(patched_tokens, tokens)


def test_multi_image_prompts_keep_each_images_budget(qwen):
    family_name, model, processor = qwen
    sizes = [(300, 900), (500, 400)]
    inputs = inputs_for(processor, family_name, sizes, images_per_prompt=2)
    config = HiREDConfig(budget=0.2)
    hired.apply(model, config)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    report = model.hired_report
    hired.remove(model)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert [image.llm_tokens for image in report.images] == \
        [hired.planned_tokens(model.config, size, config) for size in sizes]


def test_planned_tokens_read_the_processors_pixels(qwen):
    family_name, model, _ = qwen
    small = record_of(family_name).processor(build_processor(family_name).tokenizer, max_pixels=200_000)
    size = (900, 1200)
    config = HiREDConfig(budget=1.0)
    ids = inputs_for(small, family_name, [size])["input_ids"]
    placeholders = int((ids == model.config.image_token_id).sum())
    assert hired.planned_tokens(model.config, size, config, processor=small) == placeholders
    assert hired.planned_tokens(model.config, size, config) > placeholders  # the checkpoints' 12.8 / 16.8 Mpx
    with pytest.raises(InputError, match="200"):
        hired.planned_tokens(model.config, (2, 3000), config)


def test_videos_are_refused_below_budget_one(qwen):
    family_name, model, processor = qwen
    inputs = inputs_for(processor, family_name, [(300, 300)])
    hired.apply(model, HiREDConfig(budget=0.2))
    with pytest.raises(InputError, match="image tokens only"):
        model(**inputs, pixel_values_videos=inputs["pixel_values"], video_grid_thw=inputs["image_grid_thw"])
    hired.remove(model)


def test_region_budgets_share_by_area_and_content_exactly():
    valid = torch.ones(3, 16, dtype=torch.bool)
    valid[2, 8:] = False  # a partial cell
    init = torch.zeros(3, 16)
    init[0] = 1.0  # all the content in cell 0
    assert region_budgets(init, valid, 20, 0.0).tolist() == [16, 3, 1]  # content first, overflow by area (16:8)
    assert region_budgets(init, valid, 10, 1.0).tolist() == [4, 4, 2]  # by area
    for alpha in (0.0, 0.3, 0.5, 1.0):
        assert int(region_budgets(init, valid, 13, alpha).sum()) == 13
    assert int(region_budgets(init, valid, 99, 0.5).sum()) == 40  # capped at the valid tokens


def test_a_saved_preset_loads_through_from_pretrained(tmp_path, qwen):
    family_name, model, processor = qwen
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = hired.from_pretrained(str(tmp_path), HiREDConfig(budget=0.2))
    assert type(loaded) is type(model)
    inputs = inputs_for(loaded_processor, family_name, [(300, 900)])
    assert torch.equal(inputs["input_ids"], inputs_for(processor, family_name, [(300, 900)])["input_ids"])
    with torch.no_grad():
        loaded.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert loaded.hired_report.images[0].kept == round(0.2 * loaded.hired_report.images[0].total)
    hired.remove(loaded)


def test_a_folder_with_the_checkpoints_processor_keys_reads_its_pixels(tmp_path, qwen):
    """A preprocessor_config.json as the Qwen checkpoints write it (min_pixels / max_pixels keys),
    with a smaller max: planned_tokens(processor=) reads the loaded processor's pixels."""
    import json

    family_name, model, processor = qwen
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    size = saved.pop("size")
    saved.update(min_pixels=size["shortest_edge"], max_pixels=150_000,
                 processor_class=type(processor).__name__)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(saved))
    loaded, loaded_processor = hired.from_pretrained(str(tmp_path), HiREDConfig(budget=1.0))
    hired.remove(loaded)
    picture = (900, 1200)
    ids = inputs_for(loaded_processor, family_name, [picture])["input_ids"]
    placeholders = int((ids == loaded.config.image_token_id).sum())
    config = HiREDConfig(budget=1.0)
    assert hired.planned_tokens(loaded.config, picture, config, processor=loaded_processor) == placeholders
    assert hired.planned_tokens(loaded.config, picture, config) > placeholders


@pytest.mark.parametrize("name, family, layers, global_layers, cell, window", [
    ("qwen2.5-vl-3b", "qwen2_5_vl", 32, (7, 15, 23, 31), 16, 4),
    ("qwen2.5-vl-7b", "qwen2_5_vl", 32, (7, 15, 23, 31), 16, 4),
    ("qwen3-vl-2b", "qwen3_vl", 24, None, 14, 0),
    ("qwen3-vl-8b", "qwen3_vl", 27, None, 14, 0),
])
def test_presets_have_the_checkpoints_geometry(name, family, layers, global_layers, cell, window):
    from hired.presets import build_config
    from hired.recipe import Recipe

    config = build_config(name)
    qwen_family = FAMILIES[family]
    assert config.model_type == family
    assert qwen_family.vision_layer_count(config) == layers
    assert qwen_family.global_layers(config) == global_layers
    assert (qwen_family.cell(config), qwen_family.window(config)) == (cell, window)
    recipe = Recipe.build(config, HiREDConfig())
    assert recipe.requests["final"].layer == layers - 1 and recipe.requests["init"].kind == "received"
    # 1000 x 1000 px: smart_resize to 1008 x 1008 (patch 14) or 992 x 992 (patch 16); 2 x 2 merged
    expected = (1008 // 28) ** 2 if family == "qwen2_5_vl" else (992 // 32) ** 2
    assert hired.planned_tokens(config, (1000, 1000), HiREDConfig(budget=1.0)) == expected


def test_merging_combines_the_right_tokens_in_the_blocks_window_order(qwen):
    """A merging policy whose weights give each token the merger input of the token before it
    (in its cell): as the merger MLP works row by row, each kept feature must be the unmerged
    feature of that other token, in raster order, whatever order the blocks hold the tokens in."""
    from hired.backends.hf.patch import ImageEncoder
    from hired.core.view import Selection
    from hired.policies import register

    @register("test-roll-merge", merges=True)
    def roll(view, config):
        P, N = view.valid.shape
        weights = torch.zeros(P, N, N)
        weights[:, torch.arange(N), torch.roll(torch.arange(N), 1)] = 1.0
        return Selection(view.valid.clone(), view.valid.sum(1), weights)

    family_name, model, processor = qwen
    hired.remove(model)
    inputs = inputs_for(processor, family_name, [(448, 896)])  # two full cells either way
    encoder = ImageEncoder(model, HiREDConfig(budget=1.0, method="test-roll-merge"))
    call = encoder.image_call(dict(inputs))
    with torch.no_grad():
        plain = encoder.plain(call)[0]
        merged, _ = encoder.encode(call)
    plain, merged = (plain[0], merged[0][0]) if isinstance(plain, tuple) else (plain, merged[0])
    layout = FAMILIES[family_name].layout(model.config, hired.families.ImageInput(grid=tuple(
        inputs["image_grid_thw"][0].tolist())))
    assert layout.partitions == 2 and bool(layout.valid.all())
    raster_of = torch.empty(layout.total, dtype=torch.long)
    raster_of[layout.positions] = torch.arange(layout.length)
    p, n = layout.positions // layout.tokens, layout.positions % layout.tokens
    source = raster_of[p * layout.tokens + (n - 1) % layout.tokens]
    torch.testing.assert_close(merged, plain[source])


def test_continuing_a_cache_uses_the_unmodified_positions(qwen):
    """generate on the cache a patched generate returned (the caller's sequences + new tokens):
    the new tokens' positions come from the rope deltas, which count the dropped tokens."""
    family_name, model, processor = qwen
    inputs = inputs_for(processor, family_name, [(300, 900)])
    positions = []
    for config in (None, HiREDConfig(budget=0.3)):
        hired.remove(model)
        if config is not None:
            hired.apply(model, config)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
            ids = torch.cat([out.sequences, torch.tensor([[7, 8]])], 1)
            calls, handle = llm_positions(model)
            try:
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), cache=out.cache,
                               max_new_tokens=3, do_sample=False)
            finally:
                handle.remove()
        positions.append([call["position_ids"] for call in calls])
    hired.remove(model)
    assert len(positions[0]) == len(positions[1]) == 3
    for full, short in zip(*positions):
        torch.testing.assert_close(short, full)


def test_cli_runs_the_tiny_presets_and_viz_draws_the_cells(tmp_path):
    import json

    from typer.testing import CliRunner

    from hired.cli import app

    runner = CliRunner()
    picture = tmp_path / "wide.png"
    noise_image(300, 900).save(picture)
    for preset in NAMES.values():
        result = runner.invoke(app, ["run", "--model", preset, "-i", str(picture), "-p", "what color",
                                     "--budget", "0.2", "--max-new-tokens", "2", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout.strip().splitlines()[-1])
        assert data["kept"] == round(0.2 * data["total"]) == data["llm_image_tokens"]
    from PIL import Image

    viz = runner.invoke(app, ["viz", "--model", NAMES["qwen2_5_vl"], "-i", str(picture), "--out",
                              str(tmp_path / "k.png"), "--methods", "hired,random", "--panel", "96"])
    assert viz.exit_code == 0, viz.output
    assert "2 rows x 2 panels" in viz.output  # 300 x 900 -> 308 x 896 px: 1 x 2 cells of 448 px
    assert Image.open(tmp_path / "k.png").format == "PNG"
