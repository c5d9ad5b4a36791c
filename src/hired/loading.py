"""Loading a model and its processor: a hub id or local path, or a random-weight preset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hired.errors import HiREDError, UnsupportedModelError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The bundled demo model: a small LLaVA-NeXT trained on synthetic scenes (hired.demo.train); the
# default of `hired run`, `hired viz` and `hired eval`.
DEMO = "demo"
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"
# A small InternVL trained the same way (`python -m hired.demo.train --family internvl`).
DEMO_INTERNVL = "demo-internvl"
DEMO_INTERNVL_DIR = Path(__file__).resolve().parent / "demo_internvl_model"
DEMOS = {DEMO: DEMO_MODEL_DIR, DEMO_INTERNVL: DEMO_INTERNVL_DIR}
DEFAULT_MODEL = DEMO


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    name: str
    random_weights: bool

    def format_prompt(self, question: str, images: int = 1) -> str:
        """The question as the model expects it, with one image placeholder per image."""
        token = getattr(self.processor, "image_token", "<image>")
        if token in question:
            return question
        template = getattr(self.processor, "chat_template", None) or getattr(
            getattr(self.processor, "tokenizer", None), "chat_template", None
        )
        if template:
            content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True
            )
        return "\n".join([token] * images + [question])

    def inputs(self, images: Any, text: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Processor outputs for ``images`` and ``text``, on the model's device and dtype."""
        return model_inputs(self.model, self.processor, images, text, **kwargs)


def model_inputs(model: Any, processor: Any, images: Any, text: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
    """Run the processor and put its tensors on the model's device, pixels in the model's dtype."""
    inputs = processor(images=images, text=text, return_tensors="pt", **kwargs).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return dict(inputs)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HiREDError("--device cuda was asked for but torch sees no CUDA GPU")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise HiREDError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def load_model_and_processor(model_id: str, **kwargs: Any) -> tuple[Any, Any]:
    """A checkpoint of a supported family (see :data:`hired.families.FAMILIES`) from the hub or a
    local folder, loaded exactly as transformers loads it."""
    from transformers import AutoConfig

    from hired.families import BY_MODEL_TYPE, supported

    try:
        config = AutoConfig.from_pretrained(model_id)
    except OSError as error:
        raise HiREDError(f"cannot load model {model_id!r}: {str(error).splitlines()[0]}") from None
    if config.model_type not in BY_MODEL_TYPE:
        raise UnsupportedModelError(
            f"{model_id} is a {config.model_type!r} model; hired supports {supported()} checkpoints"
        )
    family = BY_MODEL_TYPE[config.model_type]
    model = family.model_class().from_pretrained(model_id, **kwargs)
    processor = family.prepare_processor(family.load_processor(model_id, model.config), model.config)
    return model.eval(), processor


def load(spec: str | None = None, device: str = "auto", dtype: str = "auto", **preset_kwargs: Any) -> LoadedModel:
    """``spec`` is ``"demo"`` (the bundled model, the default), ``"demo-internvl"`` (its InternVL
    sibling), a preset name (random weights), a local folder or a hub id."""
    from hired import presets

    spec = spec or DEFAULT_MODEL
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    if spec in DEMOS:
        folder = DEMOS[spec]
        if not (folder / "model.safetensors").is_file():
            family = " --family internvl" if spec == DEMO_INTERNVL else ""
            raise HiREDError(f"the bundled demo model is missing from {folder}; rebuild it with "
                             f"`python -m hired.demo.train{family} --out {folder}` or pass --model")
        model, processor = load_model_and_processor(str(folder), dtype=torch_dtype)
        return LoadedModel(model.to(target), processor, spec, random_weights=False)
    if spec in presets.PRESETS:
        model = presets.build_model(spec, dtype=torch_dtype, device=target, **preset_kwargs)
        return LoadedModel(model, presets.build_processor(presets.PRESETS[spec].family), spec, random_weights=True)
    model, processor = load_model_and_processor(spec, dtype=torch_dtype)
    return LoadedModel(model.to(target), processor, spec, random_weights=False)
