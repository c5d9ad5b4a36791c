"""The vLLM backend's pure parts, without vLLM: settings, tensor-parallel scoring math with
simulated shards, weight names. (The plugin under vLLM itself: tests_vllm/, run by .ci/run.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hired.backends.vllm.scoring import (
    QKVScoreRecorder,
    one_head_cls_attention,
    partial_cls_attention,
    partial_cls_logits,
)
from hired.backends.vllm.settings import VLLMSettingError, check_layers, read_config, vllm_built_layers
from hired.backends.vllm.weights import vision_tower_key
from hired.config import HiREDConfig
from hired.core.scoring import ScoreRequest, cls_attention


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


@pytest.mark.parametrize("heads, ranks", [(4, 1), (4, 2), (4, 4), (16, 8), (6, 3)])
def test_sum_of_shard_partials_is_the_unsharded_cls_row(heads, ranks):
    torch.manual_seed(heads * 10 + ranks)
    B, T, d = 3, 65, 8
    q, k, v = (torch.randn(B, T, heads * d) * 2 for _ in range(3))
    full = cls_attention(q[:, 0], k, heads)
    shards = fused_qkv_shards(q, k, v, heads, ranks)
    partials = [partial_cls_attention(s, heads // ranks) for s in shards]
    summed = torch.stack(partials).sum(0)  # the all-reduce
    torch.testing.assert_close(summed, full, rtol=1e-5, atol=1e-6)
    assert summed.shape == (B, T - 1)
    if ranks > 1:  # one rank alone is not the answer: the reduction matters
        assert not torch.allclose(partials[0], full)


@pytest.mark.parametrize("heads, ranks", [(4, 2), (16, 8), (6, 3)])
def test_one_head_logits_summed_over_shards_are_the_unsharded_row(heads, ranks):
    """PruMerge's reference scores with one full-width head: the logits split by columns."""
    torch.manual_seed(ranks)
    B, T, d = 2, 33, 8
    q, k, v = (torch.randn(B, T, heads * d) for _ in range(3))
    shards = fused_qkv_shards(q, k, v, heads, ranks)
    logits = torch.stack([partial_cls_logits(s) for s in shards]).sum(0)  # the all-reduce
    torch.testing.assert_close(one_head_cls_attention(logits, heads * d), cls_attention(q[:, 0], k, 1),
                               rtol=1e-5, atol=1e-6)


class Proj(nn.Module):
    """Stands in for a rank's qkv_proj: returns (output, bias) like vLLM's linear layers."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, x):
        return self.output, None


def test_recorder_reduces_and_gathers_across_simulated_ranks():
    torch.manual_seed(0)
    heads, ranks, B, T, d = 8, 4, 2, 17, 4
    q, k, v = (torch.randn(B, T, heads * d) for _ in range(3))
    shards = fused_qkv_shards(q, k, v, heads, ranks)
    partials = [partial_cls_attention(s, heads // ranks) for s in shards]
    logits = [partial_cls_logits(s) for s in shards]
    local_keys = [s.chunk(3, -1)[1][:, 1:] for s in shards]
    proj = Proj(shards[0])  # rank 0; the other ranks' contributions come in through the collectives

    def all_reduce(t):
        return t + (sum(partials[1:]) if t.shape == partials[0].shape else sum(logits[1:]))

    requests = {"init": ScoreRequest(3, heads), "final": ScoreRequest(3, 1)}
    recorder = QKVScoreRecorder({3: proj}, requests, heads // ranks, ranks, all_reduce,
                                lambda t: torch.cat([t, *local_keys[1:]], -1), keep_keys=(3,))
    proj(None)
    assert recorder.scores == {}  # inactive outside recording()
    with recorder.recording():
        proj(None)
    torch.testing.assert_close(recorder.scores["init"], cls_attention(q[:, 0], k, heads), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(recorder.scores["final"], cls_attention(q[:, 0], k, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(recorder.keys[3], k[:, 1:])
    recorder.remove()
    with recorder.recording():
        proj(None)
    assert recorder.scores == {}


def test_unsharded_recorder_is_the_hf_hooks_math():
    torch.manual_seed(1)
    heads, B, T, d = 4, 2, 10, 8
    q, k, v = (torch.randn(B, T, heads * d) for _ in range(3))
    proj = nn.Identity()
    requests = {"init": ScoreRequest(0, heads), "final": ScoreRequest(0, 1, None)}
    recorder = QKVScoreRecorder({0: proj}, requests, heads)
    with recorder.recording():
        proj(torch.cat([q, k, v], -1))
    assert torch.equal(recorder.scores["init"], cls_attention(q[:, 0], k, heads))
    assert torch.equal(recorder.scores["final"], cls_attention(q[:, 0], k, 1, None))


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
