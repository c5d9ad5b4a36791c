"""Loading a model and its processor: a hub id or local path, or a random-weight preset."""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from hired.errors import (
    HiREDError,
    ImageTokenMismatchError,
    InputError,
    ModelLoadError,
    OptionError,
    UnsupportedModelError,
)

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
    """Run the processor and put its tensors on the model's device, pixels in the model's dtype.
    The prompts' image placeholders must match the images (ImageTokenMismatchError) and, on an
    unpatched model, each prompt must fit the language model's context (InputError)."""
    from hired.checks import check_context

    texts = [text] if isinstance(text, str) else list(text)
    pictures = images if isinstance(images, (list, tuple)) else [images]
    token = getattr(processor, "image_token", None)
    if isinstance(token, str) and token and all(isinstance(t, str) for t in texts):
        found = sum(t.count(token) for t in texts)
        if found != len(pictures):
            raise ImageTokenMismatchError(
                f"the prompt holds {found} {token} placeholder{'s' if found != 1 else ''} for "
                f"{len(pictures)} image{'s' if len(pictures) != 1 else ''}: give one per image (hired's commands "
                f"add it themselves; leave {token} out of the question)")
    try:
        inputs = processor(images=images, text=text, return_tensors="pt", **kwargs).to(model.device)
    except ValueError as error:  # the processor's own checks (placeholders, sizes)
        raise InputError(f"the processor refused the prompt or image: {str(error).splitlines()[0]}") from None
    if "hired_adapter" not in model.__dict__:  # a patched model checks the prompt after dropping
        check_context(model.config, inputs["input_ids"].shape[-1])
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return dict(inputs)


MAX_THREADS = 4096  # beyond it torch.set_num_threads overflowed (a traceback) or asked for absurd pools


def set_torch_threads() -> int:
    """torch's CPU threads from OMP_NUM_THREADS when it is set (as the commands honour it), else
    torch's default; OptionError where it is not an integer from 1 to MAX_THREADS."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value:
        return torch.get_num_threads()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_THREADS:
        raise OptionError(f"OMP_NUM_THREADS must be an integer from 1 to {MAX_THREADS} such as 1 or 2; "
                          f"got {value[:40]!r}")
    torch.set_num_threads(int(value))
    return int(value)


DEVICES = "auto, cpu, cuda or cuda:N (or mps on Apple silicon)"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelLoadError(f"device must be {DEVICES}; got {device!r}") from None
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"--device {device} was asked for but torch sees no CUDA GPU")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ModelLoadError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    elif target.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError(f"--device {device} was asked for but torch sees no MPS device")
    elif target.type != "cpu":
        raise ModelLoadError(f"device must be {DEVICES}; got {device!r}")
    return target


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host takes a TCP connection within ``timeout`` seconds (True behind a
    proxy, which a direct connection cannot judge): a quick answer where huggingface_hub would
    retry for half a minute."""
    from huggingface_hub import constants

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


# Sizes and counts a model is built from: where a config gives one, it must be an integer >= 1
# (0 or null was a ZeroDivisionError deep in transformers, or a model with no layers).
COUNT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "image_size",
                "patch_size", "num_channels", "image_seq_length")


NEVER_NULL = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")  # null: a default


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def config_problem(config: Any, where: str = "") -> str | None:
    """What is wrong with a checkpoint's parsed config.json (the object itself or a nested
    ``*_config`` of it), or None: the one check of the sizes a model is built from."""
    if not isinstance(config, dict):
        return f"{where or 'the file'} is not a JSON object (got {json.dumps(config)[:40]})"
    for key, value in config.items():
        name = f"{where}.{key}" if where else key
        if key in COUNT_FIELDS and (value is not None or key in NEVER_NULL):
            sizes = value if key in ("image_size", "patch_size") and isinstance(value, list) and value else [value]
            if not all(is_count(v) for v in sizes):
                return f"{name} must be a positive integer, got {json.dumps(value)[:40]}"
        elif key == "image_grid_pinpoints" and value is not None:
            if not (isinstance(value, list) and value and all(
                    isinstance(pair, list) and len(pair) == 2 and all(is_count(v) for v in pair) for pair in value)):
                return f"{name} must be a non-empty list of [height, width] pairs of positive integers, got " \
                       f"{json.dumps(value)[:40]}"
        elif key.endswith("_config") and value is not None and key != "quantization_config":
            problem = config_problem(value, name)
            if problem:
                return problem
    return None


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a ``.safetensors`` file's framing (its header and the bytes it covers),
    or None: a truncated or zeroed file was a SafetensorError traceback."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path} is truncated or empty ({size} bytes): not a safetensors file"
        length = int.from_bytes(head, "little")
        if not 2 <= length <= size - 8:
            return f"{path} is truncated or corrupt: its header claims {length} bytes, the file holds {size}"
        try:
            header = json.loads(f.read(length))
            end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return f"{path} is corrupt: its header is not a safetensors header"
    if 8 + length + end != size:
        return f"{path} is truncated or corrupt: its tensors need {8 + length + end} bytes, the file holds {size}"
    return None


def check_checkpoint_folder(folder: Path) -> None:
    """config.json and every ``.safetensors`` file of a local checkpoint, checked before
    transformers reads them: ModelLoadError naming the file and the field."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{path} is not valid JSON ({str(error).splitlines()[0]})") from None
    problem = config_problem(config)
    if problem:
        raise ModelLoadError(f"{path}: {problem}")
    for weights in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            raise ModelLoadError(problem)


def checkpoint_source(model_id: str) -> dict[str, Any]:
    """Where ``model_id`` loads from, checked before transformers is asked: a folder with a
    config.json, or a hub id that is cached or reachable. Returns the extra ``from_pretrained``
    arguments (``local_files_only`` where the hub cannot be reached but the cache holds it);
    raises ModelLoadError naming the problem."""
    from huggingface_hub import constants, try_to_load_from_cache

    path = Path(model_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model {model_id} is a file; give a checkpoint folder, a hub id or a preset")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model folder {model_id} holds no config.json: not a transformers checkpoint")
        check_checkpoint_folder(path)
        return {}
    if model_id.startswith((".", "~", "/", "\\")) or model_id.endswith(("/", "\\")) or not HUB_ID.match(model_id):
        raise ModelLoadError(f"no model folder {model_id!r} (and it is no hub id or preset)")
    cached = isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    if constants.is_offline_mode():
        if not cached:
            raise ModelLoadError(f"model {model_id!r} is not a local folder, a preset or in the Hugging Face cache, "
                                 f"and HF_HUB_OFFLINE is set")
        return {}
    if hub_reachable():
        return {}
    if cached:
        return {"local_files_only": True}
    raise ModelLoadError(f"model {model_id!r} is not a local folder, a preset or in the Hugging Face cache, and "
                         f"{constants.ENDPOINT} cannot be reached (offline?)")


def load_model_and_processor(model_id: str, **kwargs: Any) -> tuple[Any, Any]:
    """A checkpoint of a supported family (see :data:`hired.families.FAMILIES`) from the hub or a
    local folder, loaded exactly as transformers loads it."""
    from transformers import AutoConfig

    from hired.backends.hf.processors import load_processor
    from hired.backends.hf.table import hf_model
    from hired.families import BY_MODEL_TYPE, supported

    source = checkpoint_source(model_id)
    try:
        config = AutoConfig.from_pretrained(model_id, **source)
    except Exception as error:  # noqa: BLE001 - any failure reading a config is one line naming it
        raise ModelLoadError(f"cannot load model {model_id!r}: config.json: {first_line(error)}") from None
    if config.model_type not in BY_MODEL_TYPE:
        raise UnsupportedModelError(
            f"{model_id} is a {config.model_type!r} model; hired supports {supported()} checkpoints"
        )
    row = hf_model(BY_MODEL_TYPE[config.model_type])
    try:
        model = row.transformers_class().from_pretrained(model_id, **source, **kwargs)
        processor = row.prepare_processor(load_processor(model_id, **source), model.config)
    except HiREDError:
        raise
    except Exception as error:  # noqa: BLE001 - a checkpoint transformers cannot build is one line
        raise ModelLoadError(f"cannot load model {model_id!r}: {first_line(error)}") from None
    return model.eval(), processor


def first_line(error: Exception) -> str:
    """An exception as one line: its type where the text is empty or too generic."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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
            raise ModelLoadError(f"the bundled demo model is missing from {folder}; rebuild it with "
                                 f"`python -m hired.demo.train{family} --out {folder}` or pass --model")
        model, processor = load_model_and_processor(str(folder), dtype=torch_dtype)
        return LoadedModel(model.to(target), processor, spec, random_weights=False)
    if spec in presets.PRESETS:
        model = presets.build_model(spec, dtype=torch_dtype, device=target, **preset_kwargs)
        return LoadedModel(model, presets.build_processor(presets.PRESETS[spec].family), spec, random_weights=True)
    model, processor = load_model_and_processor(spec, dtype=torch_dtype)
    return LoadedModel(model.to(target), processor, spec, random_weights=False)
