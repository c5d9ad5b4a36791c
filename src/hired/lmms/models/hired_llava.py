"""lmms-eval's llava_hf model with HiRED applied after loading."""

from __future__ import annotations

from typing import Any

import hired
from hired.lmms import split_model_args

try:  # the module moved between lmms-eval releases
    from lmms_eval.models.simple.llava_hf import LlavaHf
except ImportError:  # pragma: no cover - depends on the installed lmms-eval
    from lmms_eval.models.llava_hf import LlavaHf


class HiREDLlava(LlavaHf):
    """``--model hired_llava --model_args pretrained=...,budget=0.2,alpha=0.5[,allocation=official]``."""

    def __init__(self, **kwargs: Any) -> None:
        config, rest = split_model_args(dict(kwargs))
        super().__init__(**rest)
        hired.apply(self.model, config)
        self.hired_config = config
