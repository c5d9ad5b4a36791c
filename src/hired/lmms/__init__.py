"""lmms-eval integration (optional extra ``hired[lmms]``).

Run the paper's benchmarks with HiRED applied::

    python -m hired.lmms --model hired_llava --model_args pretrained=llava-hf/llava-v1.6-vicuna-7b-hf,budget=0.2 \\
        --tasks textvqa_val,docvqa_val,chartqa,mme,pope --batch_size 1 --output_path logs/

or, with lmms-eval's plugin mechanism, ``LMMS_EVAL_PLUGINS=hired.lmms python -m lmms_eval --model hired_llava ...``.
"""

from __future__ import annotations

from typing import Any

from hired.config import HiREDConfig, parse_budget

HIRED_ARGS = ("budget", "alpha", "allocation", "method", "init_layer", "final_layer", "seed")


def split_model_args(kwargs: dict[str, Any]) -> tuple[HiREDConfig, dict[str, Any]]:
    """Separate HiRED's options from lmms-eval's llava_hf options (values may arrive as strings)."""
    ours = {k: kwargs.pop(k) for k in HIRED_ARGS if k in kwargs}
    if "budget" in ours:
        ours["budget"] = parse_budget(ours["budget"])
    for key in ("alpha",):
        if key in ours:
            ours[key] = float(ours[key])
    for key in ("init_layer", "final_layer", "seed"):
        if key in ours and ours[key] is not None:
            ours[key] = int(ours[key])
    return HiREDConfig(**ours), kwargs
