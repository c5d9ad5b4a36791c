"""The serving benchmark's model: hired's demo LLaVA-NeXT (trained ViT, 112 px crops, 64 tokens
per crop, so CLS attention means something) with a wider, deeper, random-weight language model,
so that the language model does about the share of the work it does in LLaVA-NeXT-7B (~95% of
the FLOPs before the first token; :func:`flops_split`). Two CPU cores cannot serve a 7B model
under load, and the demo's own 3-layer, 160-wide language model does too little of the work for
token dropping to show what it does at scale.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hired.bench import flops
from hired.loading import DEMO_MODEL_DIR


@dataclass(frozen=True)
class ServingLM:
    hidden: int = 512
    layers: int = 6
    heads: int = 8  # head_dim 64: one of vLLM's CPU attention sizes
    intermediate: int = 1536
    seed: int = 0


def build_serving_model(out: str | Path, lm: ServingLM = ServingLM()) -> Path:
    """Write the model (safetensors, config, processor, tokenizer, chat template) to ``out``;
    reuses a folder already built with the same shape."""
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    out = Path(out)
    stamp = out / "hired_serving_lm.txt"
    if stamp.is_file() and stamp.read_text() == repr(lm):
        return out
    demo = LlavaNextForConditionalGeneration.from_pretrained(DEMO_MODEL_DIR, dtype=torch.float32)
    config = copy.deepcopy(demo.config)
    text = config.text_config
    text.hidden_size, text.num_hidden_layers, text.intermediate_size = lm.hidden, lm.layers, lm.intermediate
    text.num_attention_heads = text.num_key_value_heads = lm.heads
    text.head_dim = lm.hidden // lm.heads
    torch.manual_seed(lm.seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    model.model.vision_tower.load_state_dict(demo.model.vision_tower.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(DEMO_MODEL_DIR).save_pretrained(out)
    for name in ("chat_template.jinja", "generation_config.json"):
        if (DEMO_MODEL_DIR / name).is_file():
            shutil.copy2(DEMO_MODEL_DIR / name, out / name)
    stamp.write_text(repr(lm))
    return out


def vllm_shapes(model_config: Any) -> tuple[flops.VisionShape, flops.TextShape]:
    """FLOPs shapes of what vLLM runs: its LLaVA builds the ViT only up to the feature layer
    (-2: all layers but the last), unlike transformers."""
    vision, text = flops.shapes_of(model_config)
    layer = model_config.vision_feature_layer
    built = vision.layers + layer + 1 if layer < 0 else layer
    return flops.VisionShape(**{**asdict(vision), "layers": built}), text


def flops_split(model_config: Any, crops: int, seq_len: int) -> dict[str, float]:
    """Shares of ViT, projector and language-model prefill in the FLOPs before the first token
    (one image of ``crops`` crops, a prompt of ``seq_len`` tokens)."""
    vision, text = vllm_shapes(model_config)
    f = flops.ttft_flops(vision, text, crops, seq_len)
    return {"vit": f.vit / f.total, "projector": f.projector / f.total, "llm": f.llm / f.total,
            "total_gflops": f.total / 1e9}
