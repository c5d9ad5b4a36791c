"""Fixtures of the vLLM tests: run with the vLLM venv's python (.ci/run builds it), e.g.

    OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1 $VLLM_VENV/bin/python -m pytest tests_vllm

Pictures and questions come from hired's scene generator (the demo model's data); every vLLM
configuration runs once per session in a subprocess (tests_vllm/engines.py), HF transformers
runs in this process, in the same venv (same transformers and image processor as vLLM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="the vLLM tests need the vLLM venv (see .ci/run)")

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

HERE = Path(__file__).resolve().parent
IMAGE_TOKEN = 4  # the demo model's <image> id
MIN_QUESTIONS = 60
ODD_SIZES = [(300, 500), (1000, 250), (250, 1000), (777, 333), (224, 224), (113, 90)]  # (w, h)


def demo_dir() -> Path:
    from hired.loading import DEMO_MODEL_DIR

    return DEMO_MODEL_DIR


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vllm")


@pytest.fixture(scope="session")
def prompts(work) -> list[dict]:
    """At least 60 demo questions on scenes of all five aspect ratios (seed 0, in order),
    then one question on each of a few odd-sized pictures (for the token counts)."""

    from hired.data.scenes import scene

    out, ratios, index = [], set(), 0
    while len(out) < MIN_QUESTIONS or len(ratios) < 5:
        image, qas = scene(0, index)
        index += 1
        ratio = round(image.width / image.height, 2)
        if len(out) >= MIN_QUESTIONS and ratio in ratios:
            continue  # enough questions: only a missing aspect ratio is still wanted
        ratios.add(ratio)
        path = work / f"scene-{index - 1:03d}.png"
        image.save(path)
        for qa in qas:
            out.append({"text": f"<image>\n{qa['question']}", "image": str(path), "answer": qa["answer"],
                        "size": [image.height, image.width]})
    base, _ = scene(0, 0)
    for w, h in ODD_SIZES:
        path = work / f"odd-{w}x{h}.png"
        base.resize((w, h)).save(path)
        out.append({"text": "<image>\nwhat color is the star?", "image": str(path), "answer": None, "size": [h, w]})
    return out


def run_engines(work: Path, name: str, model: str, prompts: list[dict], engines: list[dict], plugin: bool,
                env: dict | None = None, timeout: int = 600) -> dict:
    spec = work / f"{name}.spec.json"
    out = work / f"{name}.out.json"
    spec.write_text(json.dumps({"model": model, "plugin": plugin, "engines": engines,
                                "prompts": [{"text": p["text"], "image": p["image"]} for p in prompts]}))
    proc = subprocess.run([sys.executable, str(HERE / "engines.py"), str(spec), str(out)], cwd=work,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{name}: engines.py failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def converted_demo(work) -> Path:
    """A copy of the demo model with vLLM 0.32's vision-tower names, for vanilla vLLM (which
    cannot load the model as shipped: that is what the plugin's name mapping is for)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from hired.backends.vllm.weights import vision_tower_key

    dst = work / "demo-converted"
    shutil.copytree(demo_dir(), dst)
    tensors = load_file(dst / "model.safetensors")
    save_file({vision_tower_key(k): v for k, v in tensors.items()}, dst / "model.safetensors",
              metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="session")
def vanilla(work, prompts, converted_demo) -> dict:
    """vLLM without any plugin (VLLM_PLUGINS empty), on the converted copy."""
    return run_engines(work, "vanilla", str(converted_demo), prompts, [{"name": "vanilla"}], plugin=False,
                       env={"VLLM_PLUGINS": ""})["vanilla"]


@pytest.fixture(scope="session")
def plugin(work, prompts) -> dict:
    """The plugin on the demo model as shipped: unconfigured, budget 1.0, budget 0.2 and VisionZip
    (a merging policy) at 0.2, all through hf_overrides, four engines one after another."""
    engines = [{"name": "unconfigured"},
               {"name": "budget-1.0", "hf_overrides": {"hired_budget": 1.0}},
               {"name": "budget-0.2", "hf_overrides": {"hired_budget": 0.2}},
               {"name": "visionzip-0.2", "hf_overrides": {"hired_budget": 0.2, "hired_method": "visionzip"}}]
    env = {k: "" for k in os.environ if k.startswith("HIRED_")}
    return run_engines(work, "plugin", str(demo_dir()), prompts, engines, plugin=True, env=env)


def hf_generate(model_dir: str, prompts: list[dict], config=None, max_new_tokens: int = 4) -> list[dict]:
    """HF transformers (hired's backend when ``config`` is given), greedy, float32."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor

    import hired
    from hired.backends.hf.table import hf_model
    from hired.families import BY_MODEL_TYPE

    processor = AutoProcessor.from_pretrained(model_dir)
    from transformers import AutoConfig

    family = BY_MODEL_TYPE[AutoConfig.from_pretrained(model_dir).model_type]
    model = hf_model(family).transformers_class().from_pretrained(model_dir, dtype=torch.float32).eval()
    if config is not None:
        hired.apply(model, config)
    eos = model.generation_config.eos_token_id
    out = []
    with torch.inference_mode():
        for p in prompts:
            image = Image.open(p["image"]).convert("RGB")
            inputs = processor(images=image, text=p["text"], return_tensors="pt")
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new = ids[0, inputs["input_ids"].shape[1]:].tolist()
            report = model.hired_report.images[0] if config is not None else None
            out.append({
                "ids": [t for t in new if t != eos],
                "text": processor.decode(new, skip_special_tokens=True),
                "prompt_len": int(inputs["input_ids"].shape[1]),
                "image_tokens": int((inputs["input_ids"] == model.config.image_token_id).sum()),
                "keep_mask": (report.keep_mask & report.valid).tolist() if report is not None else None,
                "llm_tokens": report.llm_tokens if report is not None else None,
                "size": [image.height, image.width],
            })
    return out


@pytest.fixture(scope="session")
def hf_full(prompts) -> list[dict]:
    return hf_generate(str(demo_dir()), prompts)


@pytest.fixture(scope="session")
def hf_hired_02(prompts) -> list[dict]:
    import hired

    return hf_generate(str(demo_dir()), prompts, hired.HiREDConfig(budget=0.2, newlines="all"))


@pytest.fixture(scope="session")
def hf_visionzip_02(prompts) -> list[dict]:
    import hired

    return hf_generate(str(demo_dir()), prompts, hired.HiREDConfig(budget=0.2, newlines="all", method="visionzip"))
