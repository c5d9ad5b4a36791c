"""The contract every model family passes, on a random-weight model of its real geometry.

Adding a family = one module in src/hired/families/, its presets, and one line in MODELS below;
these tests are then the only per-family tests it needs: parity at budget 1.0, exact budgets,
``hired.planned_tokens`` == what the language model receives, hooks removed after success and
after an exception, a batch of mixed sizes == the same images one by one.
"""

import pytest
import torch
from conftest import noise_image

import hired
from hired import HiREDConfig
from hired.families import FAMILIES
from hired.presets import build_model, build_processor

# family -> random-weight preset
MODELS = {"llava_next": "tiny-llava-next", "llava": "tiny-llava", "internvl": "tiny-internvl",
          "llava_onevision": "tiny-llava-onevision", "qwen2_5_vl": "tiny-qwen2.5-vl", "qwen3_vl": "tiny-qwen3-vl"}
SIZES = {  # (height, width)
    "square": (336, 336),
    "wide": (300, 900),
    "tall": (700, 350),
    "tiny": (9, 13),
    "odd": (333, 517),
}
LARGE = (1500, 2000)  # LLaVA-OneVision downsamples its 4 x 6 crops; InternVL: 12 tiles + thumbnail
# Qwen: no downsampling, a larger picture is more regions; 1500 x 2000 (15k ViT tokens) costs minutes on CPU
LARGES = {"qwen2_5_vl": (896, 1344), "qwen3_vl": (896, 1344)}
PROMPT = "{image}\nwhat is the color of the square"  # {image}: the processor's image token
FIXED_BUDGET = ["hired", "random", "spatial", "visionzip", "prumerge-fixed", "prumerge+-fixed", "hired+"]


def test_every_family_has_a_contract_model():
    assert set(MODELS) == set(FAMILIES)


@pytest.fixture(scope="module", params=sorted(MODELS))
def family_model(request):
    name = request.param
    model = build_model(MODELS[name], seed=0)
    yield name, model, build_processor(name)
    hired.remove(model)


def inputs_for(processor, sizes, seed=0):
    images = [noise_image(h, w, seed + i) for i, (h, w) in enumerate(sizes)]
    text = PROMPT.format(image=processor.image_token)
    return dict(processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True))


def placeholders(processor, size):
    ids = inputs_for(processor, [size])["input_ids"][0]
    return int((ids == processor.tokenizer.convert_tokens_to_ids(processor.image_token)).sum())


def no_hooks_left(model):
    tower = getattr(model.model, "vision_tower", None) or model.model.visual  # Qwen: visual
    hooks = [h for m in tower.modules() for h in (*m._forward_hooks.values(),
                                                                     *m._forward_pre_hooks.values())]
    return not any(getattr(h, "__module__", "").startswith("hired") for h in hooks)  # transformers has its own


@pytest.mark.parametrize("size, method", [("square", "hired"), ("wide", "hired"), ("tiny", "hired")]
                         + [("wide", m) for m in FIXED_BUDGET[1:]])
def test_budget_one_gives_the_unmodified_logits_and_tokens(family_model, size, method):
    _, model, processor = family_model
    inputs = inputs_for(processor, [SIZES[size]])
    hired.remove(model)
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        hired.apply(model, HiREDConfig(budget=1.0, newlines="all", method=method))
        patched_logits = model(**inputs).logits
        patched_tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    hired.remove(model)
    assert patched_logits.shape == logits.shape
    torch.testing.assert_close(patched_logits, logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(patched_tokens, tokens)


@pytest.mark.parametrize("method", FIXED_BUDGET + ["hired-official"])
@pytest.mark.parametrize("newlines", ["all", "none"])
@pytest.mark.parametrize("budget", [0.2, 100, 1, 1.0])
def test_planned_tokens_equal_what_the_language_model_receives(family_model, method, newlines, budget):
    _, model, processor = family_model
    allocation = "official" if method.endswith("-official") else "exact"
    config = HiREDConfig(budget=budget, method=method.removesuffix("-official"), allocation=allocation,
                         newlines=newlines)
    sizes = list(SIZES.values())
    hired.apply(model, config)
    with torch.no_grad():
        model(**inputs_for(processor, sizes))
    report = model.hired_report
    hired.remove(model)
    planned = [hired.planned_tokens(model.config, size, config) for size in sizes]
    received = [image.llm_tokens for image in report.images]
    if allocation == "official" and not (isinstance(budget, float) and budget == 1.0):
        assert planned == [None] * len(sizes)  # floor rounding per sub-image depends on the scores
    else:
        assert planned == received
        assert report.llm_image_tokens == sum(received)  # placeholders really in the shortened prompt
    for image in report.images:  # exact budget: min(budget, valid tokens) visual tokens
        if allocation == "exact":
            expected = budget if isinstance(budget, int) else max(1, round(budget * image.total))
            assert image.kept == min(expected, image.valid_tokens)


@pytest.mark.parametrize("size", [*SIZES, "large"])
def test_planned_tokens_at_budget_one_equal_the_processors_placeholders(family_model, size):
    _, model, processor = family_model
    config = HiREDConfig(budget=1.0, newlines="all")
    image_size = SIZES.get(size, LARGES.get(family_model[0], LARGE))
    assert hired.planned_tokens(model.config, image_size, config) == placeholders(processor, image_size)


def test_a_large_image_keeps_parity_and_its_planned_tokens(family_model):
    """The largest layouts (LLaVA-OneVision's bilinear downsampling): parity at budget 1.0, the
    planned counts at 20%, and a merging method (refused on an interpolated map)."""
    name, model, processor = family_model
    large = LARGES.get(name, LARGE)
    inputs = inputs_for(processor, [large])
    hired.remove(model)
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
        hired.apply(model, HiREDConfig(budget=1.0, newlines="all"))
        torch.testing.assert_close(model(**inputs).logits[:, -1], logits, rtol=1e-5, atol=1e-5)
        for method, newlines in (("hired", "all"), ("spatial", "none")):
            config = HiREDConfig(budget=0.2, method=method, newlines=newlines)
            hired.apply(model, config)
            model(**inputs)
            image = model.hired_report.images[0]
            assert image.kept == min(max(1, round(0.2 * image.total)), image.valid_tokens)
            assert hired.planned_tokens(model.config, large, config) == image.llm_tokens
        hired.apply(model, HiREDConfig(budget=0.2, method="visionzip"))
        if model.config.model_type == "llava_onevision":  # merges run before the projector, downsampling after
            with pytest.raises(hired.UnsupportedModelError, match="interpolated"):
                model(**inputs)
        else:
            model(**inputs)
            assert model.hired_report.images[0].kept == round(0.2 * model.hired_report.images[0].total)
    hired.remove(model)


def test_planned_tokens_are_none_where_the_count_depends_on_the_content(family_model):
    name, model, _ = family_model
    assert hired.planned_tokens(model.config, (400, 800), HiREDConfig(method="prumerge+")) is None
    kept_rows = hired.planned_tokens(model.config, (400, 800), HiREDConfig(budget=0.2, newlines="kept_rows"))
    assert (kept_rows is None) == (name in ("llava_next", "llava_onevision"))  # the others have no newlines


def test_hooks_are_removed_after_success_and_after_an_exception(family_model):
    _, model, processor = family_model
    hired.apply(model, HiREDConfig(budget=0.2))
    inputs = inputs_for(processor, [SIZES["square"]])
    with torch.no_grad():
        model(**inputs)
    assert no_hooks_left(model)
    inputs["pixel_values"] = inputs["pixel_values"][..., :100]  # the encoder raises while hooked
    with pytest.raises((ValueError, RuntimeError)):
        model(**inputs)
    assert no_hooks_left(model)
    hired.remove(model)


@pytest.mark.parametrize("method", ["hired", "visionzip"])
def test_a_batch_of_mixed_sizes_equals_one_by_one(family_model, method):
    _, model, processor = family_model
    sizes = [SIZES["wide"], SIZES["square"], SIZES["tall"]]
    hired.apply(model, HiREDConfig(budget=0.1, method=method))
    batch = inputs_for(processor, sizes)
    with torch.no_grad():
        together = model.generate(**batch, max_new_tokens=4, do_sample=False)
        masks = [image.keep_mask for image in model.hired_report.images]
        for i, size in enumerate(sizes):
            alone_inputs = inputs_for(processor, [size], seed=i)
            alone = model.generate(**alone_inputs, max_new_tokens=4, do_sample=False)
            assert torch.equal(model.hired_report.images[0].keep_mask, masks[i])
            assert torch.equal(together[i, -4:], alone[0, -4:])
    hired.remove(model)
