"""Run one or more vLLM engines on a prompt set and write what they produced as JSON.

    python engines.py SPEC.json OUT.json

SPEC: {"model": DIR, "plugin": bool, "prompts": [{"text", "image": PNG path}],
       "engines": [{"name", "hf_overrides": {...} | null, "tensor_parallel_size": 1}], "max_tokens": 4,
       "logprobs": 5}
OUT: {name: {"outputs": [{"ids", "text", "prompt_ids", "logprobs"}], "reports": [...], "init_s"}}

A script, not a test: vLLM starts its engine and worker as spawned processes that re-import the
main module, and "vanilla vLLM" needs VLLM_PLUGINS set before any vLLM process starts, so the
tests run each configuration in a subprocess of their own. With "plugin", the worker's last
HiRED reports (keep masks) are read through LLM.apply_model after each generate.
"""

from __future__ import annotations

import gc
import json
import operator
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # LLM.apply_model sends a callable

REPORTS = operator.methodcaller("hired_reports", True)  # read and clear the worker's reports


def main(spec_path: str, out_path: str) -> int:
    from PIL import Image
    from vllm import LLM, SamplingParams

    with open(spec_path) as f:
        spec = json.load(f)
    requests = [{"prompt": p["text"], "multi_modal_data": {"image": Image.open(p["image"]).convert("RGB")}}
                for p in spec["prompts"]]
    params = SamplingParams(temperature=0.0, max_tokens=spec.get("max_tokens", 4), logprobs=spec.get("logprobs", 5))
    results = {}
    for engine in spec["engines"]:
        t0 = time.perf_counter()
        llm = LLM(model=spec["model"], dtype="float32", max_model_len=1024, limit_mm_per_prompt={"image": 1},
                  enforce_eager=True, seed=0, hf_overrides=engine.get("hf_overrides") or None,
                  tensor_parallel_size=engine.get("tensor_parallel_size", 1))
        init_s = time.perf_counter() - t0
        if spec.get("plugin"):
            llm.apply_model(REPORTS)  # drop the profiling run's reports
        outputs = llm.generate(requests, params, use_tqdm=False)
        ranks = llm.apply_model(REPORTS) if spec.get("plugin") else []
        reports = ranks[0] if ranks else []
        results[engine["name"]] = {
            "init_s": init_s,
            "reports": reports,
            "rank_reports": ranks,
            "outputs": [{
                "ids": list(o.outputs[0].token_ids),
                "text": o.outputs[0].text,
                "prompt_ids": list(o.prompt_token_ids),
                "logprobs": [sorted((int(t), float(lp.logprob)) for t, lp in step.items())
                             for step in (o.outputs[0].logprobs or [])],
            } for o in outputs],
        }
        del llm
        gc.collect()
    with open(out_path, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
