"""`hired serve-bench` pieces that need no vLLM: arithmetic, log parsing, the benchmark model's
FLOPs split, the report files and the command's errors. (Under vLLM: run the command.)"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hired.bench import serving
from hired.bench.serving_model import flops_split, vllm_shapes
from hired.bench.serving_report import markdown, write_results
from hired.cli import app


def test_percentile_and_kv_line():
    assert serving.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert serving.percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)
    assert serving.percentile([], 0.5) is None
    log = "INFO ... CPU KV cache size: 87,296 tokens, Maximum concurrency for 1,024 tokens per request: 85.25x\n"
    assert serving.kv_capacity(log) == {"kv_cache_tokens": 87296, "max_model_len": 1024, "max_concurrency": 85.25}
    assert serving.kv_capacity("nothing")["kv_cache_tokens"] is None


def test_level_requests():
    settings = serving.ServeBenchSettings(vllm="true", work="w", concurrency=[1, 8, 32])
    assert settings.level_requests() == [30, 64, 256]


def test_summarize_level():
    raw = [{"item": i, "ok": True, "ttft": 0.1 * (i + 1), "latency": 1.0 + i, "prompt_tokens": 100,
            "completion_tokens": 16, "error": None} for i in range(4)]
    raw.append({"item": 4, "ok": False, "ttft": None, "latency": None, "prompt_tokens": None,
                "completion_tokens": None, "error": "HTTP 500"})
    level = serving.summarize_level({"wall_s": 2.0, "results": raw, "max_running": 3, "max_kv_usage": 0.1}, 4)
    assert (level["ok"], level["requests"], level["requests_per_s"], level["output_tokens_per_s"]) == (4, 5, 2.0, 32.0)
    assert level["ttft_p50"] == pytest.approx(0.25) and level["errors"] == ["HTTP 500"]


def test_benchmark_model_shapes_and_ideal():
    from transformers import AutoConfig

    from hired.bench.serving_model import ServingLM
    from hired.loading import DEMO_MODEL_DIR

    config = AutoConfig.from_pretrained(DEMO_MODEL_DIR)
    text = config.text_config
    lm = ServingLM()
    text.hidden_size, text.num_hidden_layers, text.intermediate_size = lm.hidden, lm.layers, lm.intermediate
    text.num_attention_heads = text.num_key_value_heads = lm.heads
    text.head_dim = lm.hidden // lm.heads
    vision, _ = vllm_shapes(config)
    assert vision.layers == 3  # vLLM builds the ViT up to the feature layer (-2 of 4)
    split = flops_split(config, 5, 262)
    assert 0.93 < split["llm"] < 0.97 and abs(split["vit"] + split["projector"] + split["llm"] - 1) < 1e-9
    assert 0.93 < serving.reference_split()["llm"] < 0.97  # LLaVA-NeXT-7B: the share the model is built to match
    pics = [{"size": (448, 448)}, {"size": (168, 504)}]
    plans = {name: serving.image_plan(config, pics, b) for name, b in (("vanilla", None), ("hired@0.2", 0.2))}
    assert [p["image_tokens"] for p in plans["vanilla"]] == [336, 264]
    ideal = serving.ideal_ratio(config, plans, [6, 6])
    assert ideal["vanilla"] == 1.0 and 2.0 < ideal["hired@0.2"] < 5.0


def fake_results() -> dict:
    level = {"concurrency": 1, "requests": 2, "ok": 2, "wall_s": 1.0, "requests_per_s": 2.0,
             "output_tokens_per_s": 32.0, "ttft_p50": 0.1, "ttft_p95": 0.2, "latency_p50": 0.5, "latency_p95": 0.6,
             "latency_mean": 0.5, "prompt_tokens_mean": 262.0, "max_running": 1, "max_kv_usage": 0.01,
             "errors": [], "raw": [], "engine": {"request_prefill_time_mean_s": 0.05, "prefix_cache_hits": 0.0,
                                                  "mm_cache_hits": 0.0}, "speedup_engine_prefill": 1.0,
             "speedup_requests": 1.0, "speedup_ttft_p50": 1.0, "kv_requests": 314.0}
    arm = {"arm": "vanilla", "budget": None, "levels": [level], "image_tokens_mean": 256.0, "ideal": 1.0,
           "prompt_tokens_as_planned": True, "kv_cache_tokens": 87296, "max_model_len": 1024,
           "max_concurrency": 85.2, "vllm_version": "0.32.0"}
    return {"schema": serving.SCHEMA, "settings": {"max_tokens": 16, "dtype": "bfloat16"},
            "model": {"path": "m", "serving_lm": {"layers": 6, "hidden": 512},
                      "flops_split": {"vit": 0.03, "projector": 0.01, "llm": 0.96, "total_gflops": 11.7},
                      "flops_split_llava_next_7b": {"llm": 0.954}},
            "pictures": [{"size": [448, 448]}], "environment": {"cpu": "cpu", "cpus": 2, "omp_threads": "1"},
            "arms": [arm]}


def test_report_files(tmp_path):
    results = fake_results()
    assert "| vanilla | 1 | 256 | 262 | 2.00 | 1.00x | 1.00x |" in markdown(results)
    paths = write_results(results, tmp_path)
    assert json.loads(paths["json"].read_text())["schema"] == "hired-serve-bench/1"
    assert paths["png"].stat().st_size > 1000


def test_command_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["serve-bench", "--vllm", str(tmp_path / "no-vllm"), "--work", str(tmp_path)])
    assert result.exit_code == 2 and "is not an executable" in result.stderr
    result = runner.invoke(app, ["serve-bench", "--vllm", "true", "--concurrency", "0", "--work", str(tmp_path)])
    assert result.exit_code == 2 and "--concurrency" in result.stderr


def test_serve_bench_checks_vllm_dtype_and_model_up_front(tmp_path):
    """A command that is not vLLM's, a --dtype vLLM refuses or a broken --model fail at once in
    one line (they were tracebacks once the first server started, minutes in)."""
    from typer.testing import CliRunner

    from hired.cli import app

    fake = tmp_path / "vllm"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 0.0.1; exit 0; fi\necho boom; exit 3\n")
    fake.chmod(0o755)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("null")
    common = ["serve-bench", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    cases = [
        (["--vllm", "/bin/false"], "is not vLLM's command: `/bin/false --version` exited 1"),
        (["--vllm", "/bin/true"], "is not vLLM's command"),
        (["--vllm", str(fake), "--dtype", "int3"], "--dtype must be one of auto, half"),
        (["--vllm", str(fake), "--model", str(tmp_path / "broken")], "config.json: the file is not a JSON object"),
        (["--vllm", str(fake), "--model", str(tmp_path)], "is not a checkpoint folder"),
        (["--vllm", str(fake)], "vanilla: vllm serve exited with code 3 before it was ready; see its log"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, [*common, *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1
