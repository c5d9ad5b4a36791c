"""The vLLM backend's pure parts, without vLLM: settings, tensor-parallel scoring math with
simulated shards, weight names. (The plugin under vLLM itself: tests_vllm/, run by .ci/run.)"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hired.backends.vllm.scoring import QKVHooks
from hired.backends.vllm.settings import VLLMSettingError, check_layers, read_config, vllm_built_layers
from hired.backends.vllm.weights import vision_tower_key
from hired.config import HiREDConfig
from hired.core.recorder import ScoreRecorder
from hired.core.scoring import ScoreRequest, cls_attention, received_attention
from hired.presets import build_model


# -- settings ------------------------------------------------------------------------------------
class HF:
    """A stand-in HF config with hf_overrides keys set as attributes."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_unconfigured_is_none():
    assert read_config(None, {}) is None
    assert read_config(HF(), {"HIRED_BUDGET": "  "}) is None


def test_env_and_defaults():
    config = read_config(None, {"HIRED_BUDGET": "0.2"})
    assert config == HiREDConfig(budget=0.2, newlines="all")
    config = read_config(None, {"HIRED_BUDGET": "576", "HIRED_ALPHA": "0.1", "HIRED_METHOD": "visionzip",
                                "HIRED_NEWLINES": "none", "HIRED_FINAL_LAYER": "-3", "HIRED_SEED": "4"})
    assert config == HiREDConfig(budget=576, alpha=0.1, method="visionzip", newlines="none", final_layer=-3, seed=4)


def test_hf_overrides_win_over_env():
    config = read_config(HF(hired_budget=0.1, hired_alpha=0.25), {"HIRED_BUDGET": "0.4", "HIRED_METHOD": "spatial"})
    assert (config.budget, config.alpha, config.method) == (0.1, 0.25, "spatial")
    assert read_config(HF(hired_budget=1.0), {}).budget == 1.0
    assert read_config(HF(hired_budget=64), {}).budget == 64


@pytest.mark.parametrize("env, hf, names", [
    ({"HIRED_BUDGET": "abc"}, {}, "HIRED_BUDGET='abc'"),
    ({"HIRED_BUDGET": "1.5"}, {}, "HIRED_BUDGET='1.5'"),
    ({"HIRED_BUDGET": "0"}, {}, "HIRED_BUDGET='0'"),
    ({"HIRED_BUDGET": "0.2", "HIRED_ALPHA": "2"}, {}, "HIRED_ALPHA='2'"),
    ({"HIRED_BUDGET": "0.2", "HIRED_ALPHA": "x"}, {}, "HIRED_ALPHA='x'"),
    ({"HIRED_BUDGET": "0.2", "HIRED_METHOD": "nope"}, {}, "HIRED_METHOD='nope'"),
    ({"HIRED_BUDGET": "0.2", "HIRED_ALLOCATION": "loose"}, {}, "HIRED_ALLOCATION='loose'"),
    ({"HIRED_BUDGET": "0.2", "HIRED_NEWLINES": "some"}, {}, "HIRED_NEWLINES='some'"),
    ({"HIRED_BUDGET": "0.2", "HIRED_INIT_LAYER": "1.5"}, {}, "HIRED_INIT_LAYER='1.5'"),
    ({"HIRED_ALPHA": "0.3"}, {}, "HIRED_ALPHA='0.3'"),  # no budget
    ({}, {"hired_budget": True}, "hired_budget=True"),
    ({}, {"hired_budget": "0.2", "hired_method": "prumerge"}, "hired_method='prumerge'"),  # adaptive
    ({}, {"hired_budget": 0.2, "hired_allocation": "official"}, "allocation='official'"),  # score-dependent floors
    ({"HIRED_BUDGET": "0.2", "HIRED_NEWLINES": "kept_rows"}, {}, "HIRED_NEWLINES='kept_rows'"),
    ({"HIRED_BUDGET": "0.2", "HIRED_SEED": "1" + "0" * 25}, {}, "HIRED_SEED='1" + "0" * 25),  # killed the engine
    ({}, {"hired_budget": 0.2, "hired_seed": 2**70}, "hired_seed=" + str(2**70)),
    ({}, {"hired_budgt": 0.2}, "key 'hired_budgt' (did you mean 'hired_budget'?); hired's: hired_budget, "),
    ({"HIRED_BUGDET": "0.2"}, {}, "variable 'HIRED_BUGDET' (did you mean 'HIRED_BUDGET'?); hired's: HIRED_BUDGET"),
    ({"HIRED_BUDGET": "0.2"}, {"hired_allocaton": "exact", "hired_x": 1}, "keys 'hired_allocaton' (did you mean"),
])
def test_bad_values_one_line_naming_them(env, hf, names):
    with pytest.raises(VLLMSettingError) as info:
        read_config(HF(**hf), env)
    message = str(info.value)
    assert "\n" not in message and message.startswith("hired: ") and names in message


def test_servable_configs_have_a_known_count():
    from transformers import AutoConfig

    import hired
    from hired.loading import DEMO_MODEL_DIR

    model_config = AutoConfig.from_pretrained(DEMO_MODEL_DIR)
    for env in ({"HIRED_BUDGET": "0.2"}, {"HIRED_BUDGET": "1.0", "HIRED_ALLOCATION": "official"},
                {"HIRED_BUDGET": "40", "HIRED_METHOD": "random", "HIRED_NEWLINES": "none"}):
        config = read_config(None, env)
        for size in ((448, 448), (168, 504), (600, 200), (333, 777)):
            assert hired.planned_tokens(model_config, size, config) is not None


# -- scoring under tensor parallelism, simulated -----------------------------------------------------
def fused_qkv_shards(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, ranks: int) -> list[torch.Tensor]:
    """What QKVParallelLinear gives each rank: [q_r | k_r | v_r], whole heads, rank-major."""
    d = q.shape[-1] // heads
    per = heads // ranks
    out = []
    for r in range(ranks):
        cols = slice(r * per * d, (r + 1) * per * d)
        out.append(torch.cat([q[..., cols], k[..., cols], v[..., cols]], -1))
    return out


def simulate_ranks(shards: list[torch.Tensor], requests: dict, heads: int, keep_keys=()) -> list[ScoreRecorder]:
    """Each rank's recorder after one qkv output, the group's collectives simulated: a first pass
    records what every rank hands to each collective (no collective's input depends on an
    earlier one's output), a second pass answers each call with the sum / concatenation over ranks."""
    ranks = len(shards)
    reduced: list[list[torch.Tensor]] = [[] for _ in shards]
    gathered: list[list[torch.Tensor]] = [[] for _ in shards]

    def recorder(reduce, gather) -> ScoreRecorder:
        return ScoreRecorder(requests, True, keep_keys, heads // ranks, ranks, reduce, gather)

    layer = next(iter(requests.values())).layer
    for rank, shard in enumerate(shards):
        recorder(lambda t, r=rank: reduced[r].append(t) or t,
                 lambda t, r=rank: gathered[r].append(t) or t).record_qkv(layer, shard)
    out = []
    for shard in shards:
        calls = {"reduce": 0, "gather": 0}

        def reduce(t, calls=calls):
            i, calls["reduce"] = calls["reduce"], calls["reduce"] + 1
            return sum(reduced[r][i] for r in range(ranks))

        def gather(t, calls=calls):
            i, calls["gather"] = calls["gather"], calls["gather"] + 1
            return torch.cat([gathered[r][i] for r in range(ranks)], -1)

        rec = recorder(reduce, gather)
        rec.record_qkv(layer, shard)
        out.append(rec)
    return out


@pytest.mark.parametrize("heads, ranks", [(4, 1), (4, 2), (4, 4), (16, 8), (6, 3)])
def test_sum_of_shard_partials_is_the_unsharded_cls_row(heads, ranks):
    torch.manual_seed(heads * 10 + ranks)
    B, T, d = 3, 65, 8
    q, k, v = (torch.randn(B, T, heads * d) * 2 for _ in range(3))
    full = cls_attention(q[:, 0], k, heads)
    shards = fused_qkv_shards(q, k, v, heads, ranks)
    recorders = simulate_ranks(shards, {"final": ScoreRequest(3, heads)}, heads)
    for rec in recorders:  # every rank ends with the unsharded row
        torch.testing.assert_close(rec.scores["final"], full, rtol=1e-5, atol=1e-6)
        assert rec.scores["final"].shape == (B, T - 1)
    if ranks > 1:  # one rank alone is not the answer: the reduction matters
        alone = ScoreRecorder({"final": ScoreRequest(3, heads)}, local_heads=heads // ranks)
        alone.record_qkv(3, shards[0])
        assert not torch.allclose(alone.scores["final"], full)


@pytest.mark.parametrize("heads, ranks", [(4, 2), (16, 8), (6, 3)])
def test_one_head_logits_summed_over_shards_are_the_unsharded_row(heads, ranks):
    """PruMerge's reference scores with one full-width head: the logits split by columns."""
    torch.manual_seed(ranks)
    B, T, d = 2, 33, 8
    q, k, v = (torch.randn(B, T, heads * d) for _ in range(3))
    recorders = simulate_ranks(fused_qkv_shards(q, k, v, heads, ranks), {"final": ScoreRequest(3, 1)}, heads,
                               keep_keys=(3,))
    for rec in recorders:
        torch.testing.assert_close(rec.scores["final"], cls_attention(q[:, 0], k, 1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rec.keys[3], k[:, 1:])  # every head's keys, gathered


@pytest.mark.parametrize("heads, ranks", [(4, 2), (6, 3)])
def test_received_scores_summed_over_shards_are_the_unsharded_ones(heads, ranks):
    torch.manual_seed(heads + ranks)
    B, T, d = 2, 21, 8
    q, k, v = (torch.randn(B, T, heads * d) for _ in range(3))
    requests = {"final": ScoreRequest(3, heads, kind="received")}
    for rec in simulate_ranks(fused_qkv_shards(q, k, v, heads, ranks), requests, heads):
        torch.testing.assert_close(rec.scores["final"], received_attention(q, k, heads, 1), rtol=1e-5, atol=1e-6)


def test_packed_segments_score_each_image_alone():
    """A packed [T, D] sequence of two images (Qwen's ViT, vLLM's encoders) scores as two batches."""
    torch.manual_seed(3)
    heads, d = 2, 8
    q, k = torch.randn(30, heads * d), torch.randn(30, heads * d)
    rec = ScoreRecorder({"final": ScoreRequest(0, heads, kind="received")}, has_cls=False)
    rec.record(0, q, k, segments=[12, 18])
    first, second = rec.scores["final"]
    torch.testing.assert_close(first, received_attention(q[None, :12], k[None, :12], heads, 0))
    torch.testing.assert_close(second, received_attention(q[None, 12:], k[None, 12:], heads, 0))


class Proj(nn.Module):
    """Stands in for a rank's qkv_proj: returns (output, bias) like vLLM's linear layers."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, x):
        return self.output, None


def test_qkv_hooks_feed_the_recorder_only_while_recording():
    torch.manual_seed(1)
    heads, B, T, d = 4, 2, 10, 8
    q, k, v = (torch.randn(B, T, heads * d) for _ in range(3))
    proj = Proj(torch.cat([q, k, v], -1))
    requests = {"init": ScoreRequest(0, heads), "final": ScoreRequest(0, 1, None)}
    hooks = QKVHooks({0: proj}, ScoreRecorder(requests))
    proj(None)
    assert hooks.recorder.scores == {}  # inactive outside recording()
    with hooks.recording() as recorder:
        proj(None)
    assert torch.equal(recorder.scores["init"], cls_attention(q[:, 0], k, heads))
    assert torch.equal(recorder.scores["final"], cls_attention(q[:, 0], k, 1, None))
    hooks.remove()
    with hooks.recording():
        proj(None)
    assert hooks.recorder.scores == {}


def test_layers_vllm_does_not_build_are_refused():
    from transformers import AutoConfig

    from hired.loading import DEMO_MODEL_DIR

    model_config = AutoConfig.from_pretrained(DEMO_MODEL_DIR)  # 4 layers, features from -2: vLLM builds 3
    assert vllm_built_layers(model_config) == 3
    check_layers(model_config, read_config(None, {"HIRED_BUDGET": "0.2"}))
    for env, named in (({"HIRED_BUDGET": "0.2", "HIRED_METHOD": "prumerge-fixed"}, "scores at vision layer 3"),
                       ({"HIRED_BUDGET": "0.2", "HIRED_FINAL_LAYER": "-1"}, "scores at vision layer 3"),
                       ({"HIRED_BUDGET": "0.2", "HIRED_INIT_LAYER": "9"}, "init_layer=9")):
        with pytest.raises(VLLMSettingError, match=named):
            check_layers(model_config, read_config(None, env))
    check_layers(model_config, read_config(None, {"HIRED_BUDGET": "0.2", "HIRED_METHOD": "prumerge-fixed",
                                                  "HIRED_FINAL_LAYER": "-2"}))


# -- weight names ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("vision_tower.embeddings.patch_embedding.weight", "vision_tower.vision_model.embeddings.patch_embedding.weight"),
    ("model.vision_tower.encoder.layers.0.self_attn.q_proj.weight",
     "model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"),
    ("vision_tower.vision_model.pre_layrnorm.bias", "vision_tower.vision_model.pre_layrnorm.bias"),
    ("model.language_model.layers.0.mlp.up_proj.weight", "model.language_model.layers.0.mlp.up_proj.weight"),
    ("image_newline", "image_newline"),
])
def test_vision_tower_names(name, expected):
    assert vision_tower_key(name) == expected
    assert vision_tower_key(vision_tower_key(name)) == expected


def test_plugin_imports_without_vllm():
    import hired.backends.vllm as plugin

    assert set(plugin.ARCHS) == {"LlavaNextForConditionalGeneration", "LlavaForConditionalGeneration"}


@pytest.mark.parametrize("environ", [{"HIRED_BUDGET": "0.2", "HIRED_METHOD": "visionzip"},
                                     {"HIRED_BUDGET": "64", "HIRED_ALPHA": "0.3", "HIRED_NEWLINES": "none"},
                                     {"HIRED_BUDGET": "1.0"}])
def test_the_start_up_check_writes_the_settings_into_the_model_config(monkeypatch, environ):
    """Workers read the settings from the model config vLLM sends them, not their environment:
    after the start-up check, an empty environment reads the same config."""
    from hired.backends.vllm.startup import check_model_config

    for key in [k for k in os.environ if k.startswith("HIRED_")]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    hf_config = build_model("tiny-llava-next", seed=0).config
    expected = read_config(hf_config)
    check_model_config(SimpleNamespace(hf_config=hf_config))
    assert read_config(hf_config, environ={}) == expected


def test_the_front_end_plans_each_picture_size_once(monkeypatch):
    """vLLM asks for the placeholder count of every image of every request: the plan runs once
    per (model config, picture size) and the count is planned_tokens's; unconfigured, vLLM's own."""
    import hired
    from hired.backends.vllm.counts import image_tokens
    from hired.recipe import Recipe

    for key in [k for k in os.environ if k.startswith("HIRED_")]:
        monkeypatch.delenv(key)
    hf_config = build_model("tiny-llava-next", seed=0).config
    full = hired.planned_tokens(hf_config, (300, 500), HiREDConfig(budget=1.0, newlines="all"))
    assert image_tokens(hf_config, 300, 500, full) == full  # unconfigured
    configured = build_model("tiny-llava-next", seed=0).config
    configured.hired_budget = 0.2
    calls = []
    plan = Recipe.planned_tokens
    monkeypatch.setattr(Recipe, "planned_tokens", lambda self, *a, **k: calls.append(a) or plan(self, *a, **k))
    expected = hired.planned_tokens(configured, (300, 500), HiREDConfig(budget=0.2, newlines="all"))
    calls.clear()
    assert [image_tokens(configured, 300, 500, full) for _ in range(3)] == [expected] * 3
    assert len(calls) == 1
    with pytest.raises(VLLMSettingError, match="layout has"):
        image_tokens(configured, 300, 500, full + 1)


def test_tower_lora_is_refused_at_start_up_when_hired_is_configured(monkeypatch):
    from hired.backends.vllm.startup import check_vllm_config

    for key in [k for k in os.environ if k.startswith("HIRED_")]:
        monkeypatch.delenv(key)
    hf_config = build_model("tiny-llava-next", seed=0).config
    vllm_config = SimpleNamespace(model_config=SimpleNamespace(hf_config=hf_config),
                                  lora_config=SimpleNamespace(enable_tower_connector_lora=True))
    check_vllm_config(vllm_config)  # HiRED not configured: vLLM's business
    hf_config.hired_budget = 0.2
    with pytest.raises(VLLMSettingError, match="enable_tower_connector_lora"):
        check_vllm_config(vllm_config)
    vllm_config.lora_config.enable_tower_connector_lora = False  # LoRA on the language model only
    check_vllm_config(vllm_config)
    check_vllm_config(SimpleNamespace(model_config=vllm_config.model_config, lora_config=None))


def test_the_recorder_scores_a_request_made_twice_once(monkeypatch):
    """init and final at the same layer (a shrunk tower, LLaVA-1.5's defaults) cost one score."""
    calls = []
    score = ScoreRecorder.score
    monkeypatch.setattr(ScoreRecorder, "score", lambda self, q, k, r: calls.append(r) or score(self, q, k, r))
    request = ScoreRequest(1, 2, kind="received")
    recorder = ScoreRecorder({"init": request, "final": request, "other": ScoreRequest(1, 1, kind="received")},
                             has_cls=False)
    torch.manual_seed(0)
    q, k = torch.randn(2, 9, 8), torch.randn(2, 9, 8)
    recorder.record(1, q, k)
    assert len(calls) == 2
    torch.testing.assert_close(recorder.scores["init"], received_attention(q, k, 2, 0))
    assert recorder.scores["final"] is recorder.scores["init"]
