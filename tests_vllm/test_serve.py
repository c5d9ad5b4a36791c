"""`vllm serve` with the plugin: the demo model as shipped (its own chat template), HiRED from
the environment, OpenAI chat completions with base64 images; bad settings stop start-up."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import demo_dir

import hired
from hired.backends.vllm.server import VLLMServer, free_port

VLLM = str(Path(sys.executable).with_name("vllm"))
SERVE_ARGS = ["--served-model-name", "demo", "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
              "--limit-mm-per-prompt", '{"image": 1}']


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIRED_")}
    return {**env, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1", **extra}


def data_url(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def test_serve_with_hired_budget_02(work, prompts, hf_full, hf_hired_02):
    from openai import OpenAI
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(demo_dir())
    config = hired.HiREDConfig(budget=0.2, newlines="all")
    picks, ratios = [], set()  # one question per aspect ratio
    for i, p in enumerate(prompts):
        ratio = round(p["size"][1] / p["size"][0], 2)
        if p["answer"] is not None and ratio not in ratios:
            ratios.add(ratio)
            picks.append(i)
    server = VLLMServer(VLLM, str(demo_dir()), SERVE_ARGS, server_env(HIRED_BUDGET="0.2"), work / "serve.log")
    with server:
        pid = server.proc.pid
        client = OpenAI(base_url=server.url + "/v1", api_key="none")
        replies = []
        for i in picks:
            question = prompts[i]["text"].split("\n", 1)[1]
            replies.append(client.chat.completions.create(
                model="demo", temperature=0.0, max_tokens=4,
                messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": data_url(prompts[i]["image"])}},
                    {"type": "text", "text": question}]}]))
    assert not Path(f"/proc/{pid}").exists()  # stopped by its PID
    assert len(picks) == 5
    for i, reply in zip(picks, replies):
        full = hf_full[i]
        planned = hired.planned_tokens(model_config, tuple(prompts[i]["size"]), config)
        # exactly full - planned fewer prompt tokens than the unmodified model's prompt
        assert reply.usage.prompt_tokens == full["prompt_len"] - (full["image_tokens"] - planned)
        assert reply.usage.prompt_tokens < full["prompt_len"]
        assert reply.choices[0].message.content.strip() == hf_hired_02[i]["text"].strip()


@pytest.mark.parametrize("env, args, named", [
    ({"HIRED_BUDGET": "1.5"}, [], "HIRED_BUDGET='1.5'"),
    ({}, ["--hf-overrides", '{"hired_budget": 0.2, "hired_newlines": "kept_rows"}'], "hired_newlines='kept_rows'"),
])
def test_bad_setting_stops_serve_with_one_line(env, args, named):
    proc = subprocess.run([VLLM, "serve", str(demo_dir()), "--host", "127.0.0.1", "--port", str(free_port()),
                           *SERVE_ARGS, *args], env=server_env(**env), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    lines = [line for line in output.splitlines() if line.startswith("hired: ")]
    assert len(lines) == 1 and named in lines[0], output[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == lines[0]  # the last word on stderr
    assert "Traceback" not in output
