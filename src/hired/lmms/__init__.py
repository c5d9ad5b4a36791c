"""lmms-eval integration (optional extra ``hired[lmms]``).

Run the paper's benchmarks with HiRED applied::

    python -m hired.lmms --model hired_llava --model_args pretrained=llava-hf/llava-v1.6-vicuna-7b-hf,budget=0.2 \\
        --tasks textvqa_val,docvqa_val,chartqa,mme,pope --batch_size 1 --output_path logs/

or, with lmms-eval's plugin mechanism, ``LMMS_EVAL_PLUGINS=hired.lmms python -m lmms_eval --model hired_llava ...``.
"""

from __future__ import annotations

from typing import Any

from hired.config import PARSERS, HiREDConfig


def split_model_args(kwargs: dict[str, Any]) -> tuple[HiREDConfig, dict[str, Any]]:
    """Separate HiRED's options (every HiREDConfig field, read by the one settings parser) from
    lmms-eval's llava_hf options; values arrive as strings."""
    from hired.policies import policy

    ours = {k: kwargs.pop(k) for k in PARSERS if k in kwargs}
    config = HiREDConfig.from_strings(ours)
    policy(config.method)
    return config, kwargs
