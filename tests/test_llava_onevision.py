"""LLaVA-OneVision specifics beyond the family contract: SigLIP's received-attention scores against
eager attention, the downsampled tokens' scores against the model's own bilinear interpolation,
and no CLS score on an encoder without CLS."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import noise_image

import hired
from hired import HiREDConfig
from hired.families import FAMILIES
from hired.presets import build_model, build_processor

FAMILY = FAMILIES["llava_onevision"]


@pytest.fixture(scope="module")
def model_and_processor():
    return build_model("tiny-llava-onevision", seed=0), build_processor("llava_onevision")


def inputs_for(processor, size):
    return dict(processor(images=[noise_image(*size)], text=["<image>\nwhat"], return_tensors="pt"))


def test_cls_scores_are_refused_without_a_cls_token(model_and_processor):
    model, _ = model_and_processor
    with pytest.raises(hired.UnsupportedModelError, match="no CLS token"):
        hired.apply(model, HiREDConfig(score="cls"))
    hired.apply(model, HiREDConfig())  # the default: the substitute
    assert model.hired_adapter.encoder.recipe.requests["final"].kind == "received"
    hired.remove(model)


def test_received_scores_match_eager_attention(model_and_processor):
    model, processor = model_and_processor
    pixels = inputs_for(processor, (300, 900))["pixel_values"][0]
    patch = hired.apply(model, HiREDConfig(budget=0.2)).hired_adapter
    tower = model.model.vision_tower
    with torch.no_grad(), patch.encoder.scoring() as recorder:
        tower(pixels)
    hired.remove(model)
    tower.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            eager = tower(pixels, output_attentions=True)
    finally:
        tower.set_attn_implementation("sdpa")
    for name, request in patch.encoder.recipe.requests.items():
        layer = request.layer
        expected = eager.attentions[layer].mean((1, 2))  # every query, every head; no CLS to skip
        torch.testing.assert_close(recorder.scores[name], expected, rtol=1e-5, atol=1e-8)


def test_downsampled_tokens_are_scored_by_the_models_own_interpolation(model_and_processor):
    """The scores of a downsampled map equal F.interpolate of the unpadded ViT score map, as
    pack_image_features does to the features."""
    from transformers.models.llava_onevision.modeling_llava_onevision import unpad_image

    model, _ = model_and_processor
    size = (1500, 2000)
    layout = FAMILY.layout(model.config, size)
    rows, cols = layout.grid
    assert layout.sources is not None and layout.budget_total < layout.total  # it is downsampled
    scores = torch.rand(layout.partitions, 729, dtype=torch.float64)
    merged = scores[1:].view(rows, cols, 27, 27).permute(0, 2, 1, 3).reshape(1, rows * 27, cols * 27)
    unpadded = unpad_image(merged, torch.tensor(size))
    h, w = unpadded.shape[-2:]
    ratio = (h * w / (9 * 27**2)) ** 0.5
    expected = F.interpolate(unpadded[None], [int(h // ratio), int(w // ratio)], mode="bilinear")[0, 0]
    pooled = layout.partition_scores(scores.float()).flatten()
    in_map = layout.positions[729:]
    got = pooled[in_map[in_map >= 0]].view(expected.shape)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    assert int(layout.valid[1:].sum()) == expected.numel()  # one slot per downsampled token


def test_what_the_family_cannot_read_is_named():
    model = build_model("tiny-llava-onevision", seed=0)
    model.config.vision_feature_select_strategy = "default"
    with pytest.raises(hired.UnsupportedModelError, match="strategy 'full'"):
        hired.apply(model)
    model.config.vision_feature_select_strategy = "full"
    model.config.vision_aspect_ratio = "pad"
    with pytest.raises(hired.UnsupportedModelError, match="anyres_max_N"):
        hired.apply(model)


def test_from_pretrained_loads_a_saved_checkpoint_without_torchvision(tmp_path, model_and_processor):
    """A checkpoint folder as the hub has it (image processor, tokenizer, processor_config.json, chat
    template) loads although transformers' OneVision video processor needs torchvision."""
    model, processor = model_and_processor
    processor.chat_template = "{% for m in messages %}{{ m['role'] }}{% endfor %}"
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "LlavaOnevisionProcessor" and saved["num_image_tokens"] == 729
    loaded, loaded_processor = hired.from_pretrained(str(tmp_path), HiREDConfig(budget=0.2))
    assert loaded_processor.vision_aspect_ratio == "anyres_max_9"
    assert loaded_processor.chat_template == processor.chat_template
    inputs = dict(loaded_processor(images=[noise_image(300, 900)], text=["<image>\nwhat"], return_tensors="pt"))
    with torch.no_grad():
        loaded(**inputs)
    report = loaded.hired_report.images[0]
    assert report.grid == (1, 3) and report.kept == round(0.2 * 4 * 729)  # full view + 3 crops of 27 x 27


def test_multi_image_prompts_keep_the_budget_of_untiled_images(model_and_processor):
    """A prompt with two images: the model does not tile them (base image + one newline each);
    hired follows it (parity at 1.0, plain top-k at 0.2) beside a one-image prompt that is tiled."""
    model, processor = model_and_processor
    images = [[noise_image(300, 500), noise_image(400, 400)], [noise_image(200, 900)]]
    inputs = dict(processor(images=images, text=["<image><image>\nwhat", "<image>\nwhat is"],
                            return_tensors="pt", padding=True))
    assert inputs["batch_num_images"].tolist() == [2, 1]
    with torch.no_grad():
        reference = model(**inputs).logits
    try:
        hired.apply(model, HiREDConfig(budget=1.0, newlines="all"))
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits, reference)
        hired.remove(model)
        hired.apply(model, HiREDConfig(budget=0.2))
        with torch.no_grad():
            model(**inputs)
        reports = model.hired_report.images
        assert [r.partition_budgets for r in reports[:2]] == [[round(0.2 * 729)]] * 2
        assert reports[2].grid == (1, 3) and reports[2].kept == round(0.2 * 4 * 729)
        hired.remove(model)
        config = HiREDConfig(budget=0.2, newlines="all")
        hired.apply(model, config)
        with torch.no_grad():
            model(**inputs)
        sizes_and_counts = [((300, 500), 2), ((400, 400), 2), ((200, 900), 1)]
        assert [r.llm_tokens for r in model.hired_report.images] == [
            hired.planned_tokens(model.config, size, config, images_in_prompt=n) for size, n in sizes_and_counts]
        assert hired.planned_tokens(model.config, (300, 500), config, images_in_prompt=2) == round(0.2 * 729) + 1
        bad = dict(inputs, batch_num_images=torch.tensor([1, 1]))
        with pytest.raises(hired.ImageTokenMismatchError, match="batch_num_images"):
            model(**bad)
    finally:
        hired.remove(model)
