"""HiRED on a random-weight LLaVA-NeXT of real geometry: parity, exactness, batching, patching."""

import pytest
import torch
from conftest import noise_image

import hired
from hired import HiREDConfig

SIZES = {  # (height, width)
    "tiny": (12, 20),
    "square": (336, 336),
    "2:1": (400, 800),
    "1:3": (900, 300),
    "huge": (3000, 4000),
}
PROMPT = "<image>\nwhat is the color of the square"


def inputs_for(processor, images, prompts=None):
    images = images if isinstance(images, list) else [images]
    prompts = prompts or [PROMPT] * len(images)
    return dict(processor(images=images, text=prompts, return_tensors="pt", padding=True))


def llm_sequence_lengths(model, call):
    """Run ``call`` and return the sequence lengths the language model received."""
    seen = []
    handle = model.model.language_model.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    try:
        call()
    finally:
        handle.remove()
    return seen


def no_hooks_left(model):
    """hired hooks only the attention projections (transformers keeps its own hooks elsewhere)."""
    projections = [m for name, m in model.model.vision_tower.named_modules() if name.endswith(("q_proj", "k_proj"))]
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in projections)


@pytest.mark.parametrize("size", ["square", "2:1", "1:3"])
def test_budget_one_matches_the_unmodified_model(model_next, size):
    model, processor = model_next
    inputs = inputs_for(processor, noise_image(*SIZES[size]))
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        hired.apply(model, HiREDConfig(budget=1.0))
        logits_hired = model(**inputs).logits
        tokens_hired = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert logits_hired.shape == logits.shape
    torch.testing.assert_close(logits_hired, logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(tokens_hired, tokens)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("budget", [1, 0.05, 0.2, 0.5, 1.0])
def test_kept_tokens_equal_the_budget_and_reach_the_language_model(model_next, size, budget):
    model, processor = model_next
    inputs = inputs_for(processor, noise_image(*SIZES[size], seed=3))
    text_tokens = int((inputs["input_ids"] != model.config.image_token_id).sum())
    hired.apply(model, HiREDConfig(budget=budget))
    with torch.no_grad():
        lengths = llm_sequence_lengths(model, lambda: model(**inputs))
    report = model.hired_report
    image = report.images[0]
    expected = min(budget if isinstance(budget, int) else max(1, round(budget * image.total)), image.valid_tokens)
    assert image.kept == expected
    assert sum(image.partition_budgets) == expected
    assert image.kept_per_partition == image.partition_budgets
    assert report.llm_image_tokens == image.llm_tokens
    assert lengths == [text_tokens + image.llm_tokens]
    assert no_hooks_left(model)


def test_official_mode_adds_no_newlines_and_follows_the_published_budgets(model_next):
    model, processor = model_next
    inputs = inputs_for(processor, noise_image(672, 672))
    hired.apply(model, HiREDConfig(budget=0.2, allocation="official"))
    with torch.no_grad():
        model(**inputs)
    image = model.hired_report.images[0]
    assert image.newline_tokens == 0
    assert image.partition_budgets[0] == min(int(int(5 * 576 * 0.2) * 0.5), 576)
    assert image.kept == sum(image.partition_budgets)  # a square picture has no padding


def test_batch_of_different_sizes_matches_one_by_one(model_next):
    model, processor = model_next
    images = [noise_image(336, 336, 1), noise_image(500, 1000, 2), noise_image(900, 300, 3)]
    prompts = [PROMPT, "<image>\nhow many", "describe the picture <image> in one two three four five"]
    hired.apply(model, HiREDConfig(budget=0.2))
    batch = inputs_for(processor, images, prompts)
    assert (batch["attention_mask"][:, 0] == 0).any()  # rows really are left-padded
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)
        kept = [r.kept for r in model.hired_report.images]
        assert out.shape[1] == batch["input_ids"].shape[1] + 5
        for i, (image, prompt) in enumerate(zip(images, prompts)):
            single = inputs_for(processor, image, [prompt])
            alone = model.generate(**single, max_new_tokens=5, do_sample=False)
            assert model.hired_report.images[0].kept == kept[i]
            assert torch.equal(alone[0, -5:], out[i, -5:])


def test_text_only_prompts_pass_through(model_next):
    model, processor = model_next
    ids = processor.tokenizer(["what is the color"], return_tensors="pt")
    with torch.no_grad():
        reference = model.generate(**ids, max_new_tokens=4, do_sample=False)
        hired.apply(model, HiREDConfig(budget=0.1))
        patched = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(reference, patched)
    assert model.hired_report is None


def test_a_compiled_forward_traces_through_the_patch(model_next):
    """generate with a compiled forward (transformers' compile path) traces the patched forward
    whole: its decoding steps carry no images, so the patch passes them through untraced."""
    model, processor = model_next
    ids = processor.tokenizer(["what is the color"], return_tensors="pt")
    with torch.no_grad():
        reference = model(**ids).logits
        hired.apply(model, HiREDConfig(budget=0.2))
        torch._dynamo.reset()
        compiled = torch.compile(model.forward, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(**ids).logits, reference)


def test_apply_twice_and_remove_leave_no_stacked_patches(model_next):
    model, processor = model_next
    original_forward = model.forward
    hired.apply(model, HiREDConfig(budget=0.5))
    hired.apply(model, HiREDConfig(budget=0.1))
    assert model.forward.__wrapped__ == original_forward
    assert model.hired_config.budget == 0.1
    inputs = inputs_for(processor, noise_image(336, 336))
    with torch.no_grad():
        model(**inputs)
    assert model.hired_report.kept == round(0.1 * 1728)
    hired.remove(model)
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__
    assert not hired.is_applied(model)
    assert no_hooks_left(model)


def test_hooks_are_removed_when_the_call_raises(model_next):
    model, processor = model_next
    hired.apply(model, HiREDConfig(budget=0.2))
    inputs = inputs_for(processor, noise_image(336, 336))
    inputs["pixel_values"] = inputs["pixel_values"][..., :100]  # the ViT will fail
    with pytest.raises(ValueError, match="doesn't match model"):  # raised by the ViT, inside the hooks
        model(**inputs)
    assert no_hooks_left(model)


def test_prompt_with_wrong_image_token_count_is_a_clear_error(model_next):
    model, processor = model_next
    inputs = inputs_for(processor, noise_image(336, 336))
    inputs["input_ids"] = inputs["input_ids"][:, 10:]
    inputs["attention_mask"] = inputs["attention_mask"][:, 10:]
    hired.apply(model, HiREDConfig(budget=0.2))
    with pytest.raises(hired.ImageTokenMismatchError, match="image placeholder"):
        model(**inputs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"budget": 0.0}, "budget ratio"),
        ({"budget": 1.5}, "budget ratio"),
        ({"budget": 0}, "budget count"),
        ({"budget": -3}, "budget count"),
        ({"alpha": 1.2}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"allocation": "fast"}, "allocation"),
        ({"method": ""}, "method must be a policy name"),
    ],
)
def test_bad_config_values_are_refused(kwargs, message):
    with pytest.raises(hired.ConfigError, match=message):
        HiREDConfig(**kwargs)


def test_unknown_method_is_refused_at_apply(model_next):
    model, _ = model_next
    with pytest.raises(hired.ConfigError, match="unknown method 'nope'; known methods: .*hired"):
        hired.apply(model, HiREDConfig(method="nope"))
    assert not hired.is_applied(model)


@pytest.mark.parametrize("kwargs", [{"init_layer": 3}, {"final_layer": -4}, {"init_layer": 99}])
def test_layers_out_of_range_are_refused_at_apply(model_next, kwargs):
    model, _ = model_next
    with pytest.raises(hired.ConfigError, match="out of range for a 3-layer vision tower"):
        hired.apply(model, HiREDConfig(**kwargs))
    assert not hired.is_applied(model)


def test_unsupported_model_is_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=32))
    with pytest.raises(hired.UnsupportedModelError, match="LlamaForCausalLM is not supported"):
        hired.apply(model)


def eager_forward(tower, pixels):
    """The tower's forward with the eager kernel, attention matrices returned."""
    tower.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            return tower(pixels, output_attentions=True)
    finally:
        tower.config._attn_implementation = "sdpa"


def test_scores_match_eager_attention(model_next):
    """The hooked CLS row equals the eager attention matrix's CLS row."""
    model, processor = model_next
    from hired.backends.hf.hooks import recording
    from hired.backends.hf.table import self_attn_qk
    from hired.core.recorder import ScoreRecorder
    from hired.core.scoring import ScoreRequest

    tower = model.model.vision_tower
    pixels = inputs_for(processor, noise_image(336, 336))["pixel_values"][0, :2]
    sources = {layer: self_attn_qk(tower.encoder.layers[layer]) for layer in (0, 1)}
    recorder = ScoreRecorder({layer: ScoreRequest(layer, 4) for layer in (0, 1)})
    with torch.no_grad(), recording(recorder, sources):
        assert not no_hooks_left(model)  # the check below would see leftover hooks
        sdpa = tower(pixels)
    assert no_hooks_left(model)
    eager = eager_forward(tower, pixels)
    for layer in (0, 1):
        expected = eager.attentions[layer][:, :, 0, 1:].sum(1)
        torch.testing.assert_close(recorder.scores[layer], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sdpa.last_hidden_state, eager.last_hidden_state, rtol=1e-4, atol=1e-5)


def test_received_scores_match_eager_attention_in_query_chunks(model_next):
    """score="received": the mean attention each patch receives from the patch queries, over heads,
    equals the eager attention matrix's, computed in chunks of queries."""
    model, processor = model_next
    from hired.backends.hf.hooks import recording
    from hired.backends.hf.table import self_attn_qk
    from hired.core.recorder import ScoreRecorder
    from hired.core.scoring import ScoreRequest

    tower = model.model.vision_tower
    pixels = inputs_for(processor, noise_image(336, 336))["pixel_values"][0, :2]
    sources = {layer: self_attn_qk(tower.encoder.layers[layer]) for layer in (0, 1)}
    recorder = ScoreRecorder({layer: ScoreRequest(layer, 4, kind="received") for layer in (0, 1)})
    with torch.no_grad(), recording(recorder, sources):
        tower(pixels)
    eager = eager_forward(tower, pixels)
    for layer in (0, 1):
        expected = eager.attentions[layer][:, :, 1:, 1:].mean((1, 2))  # patch queries -> patch keys
        torch.testing.assert_close(recorder.scores[layer], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", ["llava_next", "llava"])
def test_received_score_keeps_the_exact_budget(family, tiny_next, tiny_llava):
    model, processor = tiny_next if family == "llava_next" else tiny_llava
    image = noise_image(300, 700)
    inputs = dict(processor(images=image, text="<image>\nwhat", return_tensors="pt"))
    kept = {}
    for score in ("cls", "received"):
        hired.apply(model, HiREDConfig(budget=0.2, score=score))
        with torch.no_grad():
            model(**inputs)
        report = model.hired_report.images[0]
        assert report.kept == max(1, round(0.2 * report.total))
        kept[score] = report.keep_mask
    hired.remove(model)
    assert not torch.equal(kept["cls"], kept["received"])  # another ranking
