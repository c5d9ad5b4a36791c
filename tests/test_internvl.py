"""InternVL specifics beyond the family contract: the tile grid as the processor chooses it, the
thumbnail-first partition order, pixel-shuffle score pooling against eager attention, phase 1's
region mapping, and the clear error without image sizes."""

import pytest
import torch
from conftest import noise_image

import hired
from hired import HiREDConfig
from hired.core.allocation import subimage_content
from hired.errors import ImageTokenMismatchError
from hired.families import FAMILIES
from hired.presets import build_model, build_processor

FAMILY = FAMILIES["internvl"]


@pytest.fixture(scope="module")
def model_and_processor():
    return build_model("tiny-internvl", seed=0), build_processor("internvl")


def inputs_for(processor, sizes):
    images = [noise_image(h, w, i) for i, (h, w) in enumerate(sizes)]
    text = [f"{processor.image_token}\nwhat is the color"] * len(images)
    return dict(processor(images=images, text=text, return_tensors="pt", padding=True))


@pytest.mark.parametrize("size, grid", [((896, 1344), (2, 3)), ((1344, 896), (3, 2)), ((448, 2688), (1, 6)),
                                        ((2688, 448), (6, 1)), ((500, 500), (1, 1)), ((9, 13), (2, 3))])
def test_the_grid_follows_the_image_size_as_the_processor_tiles_it(model_and_processor, size, grid):
    model, processor = model_and_processor
    layout = FAMILY.layout(model.config, size)
    assert layout.grid == grid
    tiles = grid[0] * grid[1]
    assert layout.partitions == (tiles + 1 if tiles > 1 else 1)  # thumbnail only with 2+ tiles
    assert inputs_for(processor, [size])["pixel_values"].shape[0] == layout.partitions


def test_forward_without_image_sizes_is_one_clear_error(model_and_processor):
    model, processor = model_and_processor
    inputs = inputs_for(processor, [(300, 900)])
    del inputs["image_sizes"]
    hired.apply(model, HiREDConfig(budget=0.2))
    with pytest.raises(ImageTokenMismatchError, match="image_sizes"), torch.no_grad():
        model(**inputs)
    hired.remove(model)


def eager_cls_rows(model, pixel_values, layer):
    """CLS row of ``layer``'s attention from the eager kernel, summed over heads: [tiles, 1024]."""
    tower = model.model.vision_tower
    previous = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = tower(pixel_values=pixel_values, output_attentions=True)
    finally:
        tower.set_attn_implementation(previous)
    return out.attentions[layer][:, :, 0, 1:].sum(1)


def hooked_scores(model, inputs):
    """The final-layer scores of one image as the patch hands them to the policy: [P, 256]."""
    patch = hired.apply(model, HiREDConfig(budget=0.2)).hired_adapter
    layout = FAMILY.layout(model.config, tuple(inputs["image_sizes"][0].tolist()))
    with torch.no_grad(), patch.encoder.scoring() as recorder:
        model.model.vision_tower(pixel_values=inputs["pixel_values"])
    hired.remove(model)
    return layout.partition_scores(recorder.scores["final"])


def test_scores_are_thumbnail_first_and_summed_over_each_2x2_patch_group(model_and_processor):
    model, processor = model_and_processor
    inputs = inputs_for(processor, [(300, 900)])  # 1 x 3 tiles + thumbnail
    final = hooked_scores(model, inputs)
    rows = eager_cls_rows(model, inputs["pixel_values"], len(model.model.vision_tower.encoder.layer) - 1)
    pooled = rows.view(4, 16, 2, 16, 2).sum((2, 4)).reshape(4, 256)  # token (i, j) = patches (2i.., 2j..)
    expected = torch.cat([pooled[3:], pooled[:3]])  # HiRED's order: thumbnail first
    torch.testing.assert_close(final, expected, rtol=1e-4, atol=1e-6)


def test_phase_one_maps_each_tile_to_its_region_of_the_thumbnail(model_and_processor):
    model, _ = model_and_processor
    layout = FAMILY.layout(model.config, (300, 900))  # 1 x 3 tiles: the thumbnail's 16 columns over 3 tiles
    scores = torch.zeros(16, 16)
    scores[:, 10:] = 1.0  # attention on the right 6 of the thumbnail's 16 token columns
    content = subimage_content(scores.flatten(), layout.grid, layout.valid[1:])
    # tiles span columns [0, 16/3), [16/3, 32/3), [32/3, 16): column 10 is 2/3 in the middle tile
    torch.testing.assert_close(content, torch.tensor([0.0, 16 * 2 / 3, 16 * 16 / 3], dtype=torch.float64))


def test_single_tile_images_keep_the_plain_top_k(model_and_processor):
    model, processor = model_and_processor
    inputs = inputs_for(processor, [(448, 448)])
    final = hooked_scores(model, inputs)
    hired.apply(model, HiREDConfig(budget=0.1))
    with torch.no_grad():
        model(**inputs)
    keep = model.hired_report.images[0].keep_mask
    hired.remove(model)
    assert keep.shape == (1, 256) and int(keep.sum()) == 26
    top = final[0].topk(26).indices
    assert torch.equal(keep[0], torch.zeros(256, dtype=torch.bool).index_fill_(0, top, True))


def test_tile_limits_come_from_the_processor(model_and_processor):
    model, _ = model_and_processor
    processor = build_processor("internvl", max_tiles=4)
    assert hired.planned_tokens(model.config, (448, 4000), HiREDConfig(budget=1.0), processor=processor) == 5 * 256
    assert hired.planned_tokens(model.config, (448, 4000), HiREDConfig(budget=1.0)) == 10 * 256  # 1 x 9 + thumbnail
    ids = processor(images=[noise_image(448, 4000, 0)], text=["<IMG_CONTEXT>"], return_tensors="pt")["input_ids"]
    assert int((ids == processor.image_token_id).sum()) == 5 * 256


def test_what_the_family_cannot_read_is_named():
    model = build_model("tiny-internvl", seed=0)
    model.config.vision_feature_select_strategy = "full"
    with pytest.raises(hired.UnsupportedModelError, match="vision_feature_select_strategy='full'"):
        hired.apply(model)
    model.config.vision_feature_select_strategy = "default"
    del model.model.vision_tower.embeddings.cls_token
    with pytest.raises(hired.UnsupportedModelError, match="cls_token"):
        hired.apply(model)


def test_from_pretrained_loads_a_saved_checkpoint_as_transformers_does(tmp_path, model_and_processor):
    model, _ = model_and_processor
    processor = build_processor("internvl", max_tiles=6)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = hired.from_pretrained(str(tmp_path), HiREDConfig(budget=0.2))
    assert hired.is_applied(loaded)
    inputs = dict(loaded_processor(images=[noise_image(300, 900)], text=["<IMG_CONTEXT>\nwhat"], return_tensors="pt"))
    assert inputs["image_sizes"].tolist() == [[300, 900]]
    with torch.no_grad():
        loaded(**inputs)
    assert loaded.hired_report.images[0].kept == round(0.2 * 4 * 256)


@pytest.mark.parametrize("size", [(300, 900), (896, 1344), (2000, 300), (448, 448), (50, 70)])
def test_a_checkpoint_saved_as_the_hf_ones_plans_and_runs_every_size(tmp_path_factory, model_and_processor, size):
    """The "-hf" checkpoints save crop_to_patches=false (the processor crops on every call anyway)
    and max_patches 12: the tiles come from the placeholders, so every size plans and runs, also
    with tile limits given at call time."""
    model, _ = model_and_processor
    folder = tmp_path_factory.mktemp("internvl-hf")
    processor = build_processor("internvl")
    processor.image_processor.crop_to_patches = False
    processor.image_processor.max_patches = 12
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded, loaded_processor = hired.from_pretrained(str(folder), HiREDConfig(budget=0.2))
    assert loaded_processor.image_processor.crop_to_patches is False
    for limits in ({}, {"max_patches": 2}):
        inputs = dict(loaded_processor(images=[noise_image(*size)], text=["<IMG_CONTEXT>\nwhat"],
                                       return_tensors="pt", **limits))
        placeholders = int((inputs["input_ids"] == loaded.config.image_token_id).sum())
        options = {"max_patches": limits.get("max_patches", 12)}
        assert hired.planned_tokens(loaded.config, size, HiREDConfig(budget=1.0), processor=options) == placeholders
        with torch.no_grad():
            loaded(**inputs)
        report = loaded.hired_report.images[0]
        assert report.llm_tokens == hired.planned_tokens(loaded.config, size, HiREDConfig(budget=0.2),
                                                         processor=options)
        assert report.llm_tokens < placeholders or placeholders == 256
