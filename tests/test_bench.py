"""`hired bench`: FLOPs model by hand, result structure and consistency (not speed), the CLI."""

import json
import statistics

import pytest
import torch
from typer.testing import CliRunner

from hired.bench import flops
from hired.bench.report import markdown_table, write_results
from hired.bench.runner import METRICS, run_bench
from hired.bench.settings import BenchSettings, parse_size
from hired.bench.timing import GenerationTiming
from hired.cli import app

SIZE = (200, 150)  # width, height: 3 crops of the tiny LLaVA-NeXT


# -- FLOPs ---------------------------------------------------------------------------------
# 28 px crops of 14 px patches: 4 patches + CLS
VISION = flops.VisionShape(hidden=4, intermediate=8, layers=2, tokens=5, patch_values=3 * 14 * 14)
TEXT = flops.TextShape(hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, vocab=10)  # d_kv = 4


def test_vit_and_projector_flops_by_hand():
    # embed 2*4*(3*14*14)*4 = 18816; layer 2*5*4*16 + 2*5*2*4*8 + 2*2*25*4 = 640 + 640 + 400 = 1680
    assert flops.vit_flops(VISION, crops=1) == 18816 + 2 * 1680
    assert flops.vit_flops(VISION, crops=3) == 3 * 22176
    # 4 patch features: 2*4*(4*8 + 8*8) = 768 per crop
    assert flops.projector_flops(VISION, text_hidden=8, crops=3) == 3 * 768


def test_llm_prefill_flops_by_hand():
    # S=6: QKV/O 2*6*(8*(8+2*4) + 64) = 2304; MLP 2*6*3*8*16 = 4608; causal 2*2*8*21 = 672; head 2*8*10
    assert flops.llm_prefill_flops(TEXT, 6) == 2 * (2304 + 4608 + 672) + 160
    # full (non-causal) attention counts all 36 pairs: 2*2*8*36 = 1152
    assert flops.llm_prefill_flops(TEXT, 6, causal=False) == 2 * (2304 + 4608 + 1152) + 160
    assert flops.llm_prefill_flops(TEXT, 3) == 2 * (1152 + 2304 + 192) + 160


def test_ideal_speedup_adds_the_vit_to_both_sides():
    vit = 3 * 22176 + 3 * 768
    ideal = flops.ttft_flops(VISION, TEXT, 3, 6).total / flops.ttft_flops(VISION, TEXT, 3, 3).total
    assert ideal == pytest.approx((vit + 15328) / (vit + 7456))
    total = flops.ttft_flops(VISION, TEXT, crops=3, seq_len=6, batch=2)
    assert total.to_dict() == {"vit": 2 * 3 * 22176, "projector": 2 * 3 * 768, "llm": 2 * 15328,
                               "total": 2 * (3 * 22176 + 3 * 768 + 15328)}


def test_flops_match_the_parameter_count_of_a_built_model(tiny_next):
    """Per-token linear FLOPs = 2 x the weight count of the layers the model really has."""
    model, _ = tiny_next
    vision, text = flops.shapes_of(model.config)
    lm_layers = model.model.language_model.layers
    linear = sum(m.weight.numel() for m in lm_layers.modules() if isinstance(m, torch.nn.Linear))
    s = 7
    attention = text.layers * 2 * 2 * text.hidden * s * (s + 1) // 2
    assert flops.llm_prefill_flops(text, s) == 2 * s * linear + attention + 2 * text.hidden * text.vocab
    tower = model.model.vision_tower
    vit_linear = sum(m.weight.numel() for m in tower.modules() if isinstance(m, torch.nn.Linear))
    t = vision.tokens
    embed = 2 * (t - 1) * getattr(tower, "vision_model", tower).embeddings.patch_embedding.weight.numel()
    assert flops.vit_flops(vision, 1) == embed + 2 * t * vit_linear + vision.layers * 2 * 2 * t * t * vision.hidden


def test_real_preset_shapes():
    from hired.presets import build_config

    vision, text = flops.shapes_of(build_config("llava-next-vicuna-7b"))
    assert (vision.hidden, vision.intermediate, vision.layers, vision.tokens) == (1024, 4096, 24, 577)
    assert (text.hidden, text.intermediate, text.layers, text.kv_dim, text.vocab) == (4096, 11008, 32, 4096, 32064)
    _, mistral = flops.shapes_of(build_config("llava-next-mistral-7b"))
    assert (mistral.intermediate, mistral.kv_dim) == (14336, 1024)
    # one token: 2 x the 6.48e9 decoder weights, one attention pair per layer, the LM head
    layer_weights = 4 * 4096**2 + 3 * 4096 * 11008
    assert flops.llm_prefill_flops(text, 1) == 2 * 32 * layer_weights + 32 * 4 * 4096 + 2 * 4096 * 32064


def test_internvl_shapes_and_pixel_shuffled_projector():
    from hired.presets import build_config, build_model

    vision, text = flops.shapes_of(build_config("internvl3-8b"))
    assert (vision.hidden, vision.layers, vision.tokens, vision.pool) == (1024, 24, 1025, 4)
    assert (text.hidden, text.intermediate, text.layers, text.kv_dim, text.vocab) == (3584, 18944, 28, 512, 151674)
    model = build_model("tiny-internvl")  # the projector's own weights: 256 tokens of 4 x d_vision
    tiny_vision, tiny_text = flops.shapes_of(model.config)
    projector = model.model.multi_modal_projector
    linear = sum(m.weight.numel() for m in projector.modules() if isinstance(m, torch.nn.Linear))
    assert flops.projector_flops(tiny_vision, tiny_text.hidden, 1) == 2 * 256 * linear
    siglip, _ = flops.shapes_of(build_config("llava-onevision-qwen2-0.5b"))
    assert (siglip.tokens, siglip.layers, siglip.pool) == (729, 26, 1)  # no CLS token


# -- the benchmark on the tiny model --------------------------------------------------------------
@pytest.fixture(scope="module")
def results(tiny_next, tmp_path_factory):
    from hired.loading import LoadedModel
    from hired.presets import build_processor

    model, _ = tiny_next
    settings = BenchSettings(budgets=[1.0, 0.2], methods=["full", "hired"], image_sizes=[SIZE],
                             batch_sizes=[1, 2], new_tokens=3, runs=2, warmup=0)
    loaded = LoadedModel(model, build_processor("llava_next"), "tiny-llava-next", random_weights=True)
    out = tmp_path_factory.mktemp("bench")
    paths = write_results(run_bench(settings, progress=False, loaded=loaded), out)
    return json.loads(paths["json"].read_text()), paths


def test_three_files_and_schema(results):
    data, paths = results
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert {"schema", "config", "model", "environment", "definitions", "flops_convention", "results",
            "overhead"} <= set(data)
    assert {"torch", "transformers", "hired", "device", "device_name", "torch_threads", "dtype"} <= set(
        data["environment"])
    row_keys = {"arm", "method", "budget", "image_size", "batch_size", "kept", "total", "runs", "stats", "median",
                "vs_full", "ttft_speedup", "ideal_ttft_speedup", "flops", "status"}
    run_keys = {"ttft", "decode_time", "latency", "new_tokens", "peak_memory_bytes", "decode_tokens_per_s",
                "throughput", "oom", "call_index"}
    for row in data["results"]:
        assert row_keys <= set(row)
        assert len(row["runs"]) == 2 and all(run_keys <= set(r) for r in row["runs"])
    assert [r["arm"] for r in data["results"]] == ["full", "hired@1.0", "hired@0.2"] * 2
    table = paths["md"].read_text()
    assert table.count("| hired |") == 4 and "OOM" not in table


def test_kept_counts_match_the_budget(results):
    data, _ = results
    for row in data["results"]:
        assert row["total"] == 3 * 576
        if row["budget"] == 0.2:
            assert row["kept"] == round(0.2 * row["total"])
            assert all(r["kept_per_image"] == [row["kept"]] * row["batch_size"] for r in row["runs"])
    full = [r for r in data["results"] if r["method"] == "full"][0]
    at_one = [r for r in data["results"] if r["budget"] == 1.0][0]
    assert at_one["kept"] == full["kept"] and at_one["seq_len"] == full["seq_len"] == full["prompt_len"]


def test_ratios_are_recomputed_from_raw_runs(results):
    data, _ = results
    for batch in (1, 2):
        rows = [r for r in data["results"] if r["batch_size"] == batch]
        full = rows[0]
        for row in rows:
            for run in row["runs"]:
                assert run["new_tokens"] == 3
                assert run["throughput"] == pytest.approx(batch * 3 / run["latency"])
                assert run["decode_tokens_per_s"] == pytest.approx(batch * 2 / run["decode_time"])
                assert run["peak_memory_bytes"] >= run["memory_before_bytes"] > 0
            for metric in METRICS:
                arm = statistics.median(r[metric] for r in row["runs"])
                base = statistics.median(r[metric] for r in full["runs"])
                assert row["median"][metric] == pytest.approx(arm)
                assert row["vs_full"][metric] == pytest.approx(arm / base)
            assert row["ttft_speedup"] == pytest.approx(1 / row["vs_full"]["ttft"])
            ideal = row["flops"]["full"]["total"] / row["flops"]["kept"]["total"]
            assert row["ideal_ttft_speedup"] == pytest.approx(ideal)
            if row["budget"] in (None, 1.0):
                assert row["ideal_ttft_speedup"] == 1.0
            else:
                assert row["ideal_ttft_speedup"] > 1.2


def test_arms_are_interleaved(results):
    data, _ = results
    rows = [r for r in data["results"] if r["batch_size"] == 1]
    for rep in range(2):
        calls = [next(x["call_index"] for x in row["runs"] if x["repetition"] == rep) for row in rows]
        assert calls == list(range(calls[0], calls[0] + 3))


def test_overhead_is_reported(results):
    data, _ = results
    (row,) = data["overhead"]
    assert row["method"] == "hired" and row["budget"] == 0.2
    assert len(row["runs"]["plain_vit_s"]) == 2 and row["plain_vit_ms"] > 0
    assert row["overhead_share"] == pytest.approx(row["overhead_ms"] / row["plain_vit_ms"])
    assert 0 < row["selection_ms"] < row["hooked_encode_ms"]


def test_out_of_memory_is_recorded_not_raised(tiny_next, monkeypatch, tmp_path):
    import hired
    from hired.bench import runner
    from hired.loading import LoadedModel
    from hired.presets import build_processor

    def fake_generate(model, inputs, max_new_tokens, force_length=True):
        if hired.is_applied(model):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return None, GenerationTiming(max_new_tokens, 0.5, 0.2, 0.7, 1000)

    monkeypatch.setattr(runner, "timed_generate", fake_generate)
    model, _ = tiny_next
    loaded = LoadedModel(model, build_processor("llava_next"), "tiny-llava-next", random_weights=True)
    settings = BenchSettings(budgets=[0.2], image_sizes=[SIZE], new_tokens=3, runs=1, warmup=0, overhead=False)
    data = run_bench(settings, progress=False, loaded=loaded)
    full, arm = data["results"]
    assert full["status"] == "ok" and full["ttft_speedup"] == 1.0
    assert arm["status"] == "OOM" and arm["oom_runs"] == 1 and arm["ttft_speedup"] is None
    assert not hired.is_applied(model)
    assert "| OOM |" in markdown_table(data)
    write_results(data, tmp_path)  # the plot and table cope with OOM rows


# -- the command ---------------------------------------------------------------------------
runner_cli = CliRunner()


def test_cli_bench_writes_results(tmp_path):
    out = tmp_path / "b"
    result = runner_cli.invoke(app, ["bench", "--budgets", "0.2", "--image", "200x150", "--runs", "1",
                                     "--warmup", "0", "--new-tokens", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output and "Scoring + selection overhead" in result.output
    assert {p.name for p in out.iterdir()} == {"results.json", "results.md", "speedup.png"}
    data = json.loads((out / "results.json").read_text())
    assert [r["arm"] for r in data["results"]] == ["full", "hired@0.2"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budgets", "1.5"], "budget ratio must be in (0, 1]"),
        (["--budgets", "lots"], "budget must be a ratio"),
        (["--methods", "full,magic"], "unknown method 'magic'"),
        (["--image", "12by3"], "WxH"),
        (["--image", "0x10"], "between 1x1"),
        (["--batch-size", "0"], "--batch-size values must be integers from 1 to 4096"),
        (["--batch-size", "two"], "--batch-size takes comma-separated integers"),
        (["--runs", "0"], "Invalid value for '--runs'"),
        (["--memory-cap-gb", "-1"], "--memory-cap-gb must be a number of GiB > 0"),
        (["--model", "/no/such/model", "--llm-layers", "2"], "only apply to presets"),
    ],
)
def test_cli_bad_arguments_exit_2(args, message):
    result = runner_cli.invoke(app, ["bench", "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda_exits_2():
    result = runner_cli.invoke(app, ["bench", "--device", "cuda", "--no-progress"])
    assert result.exit_code == 2 and "no CUDA" in result.stderr


def test_parse_size_is_width_by_height():
    assert parse_size("640x480") == (640, 480)
