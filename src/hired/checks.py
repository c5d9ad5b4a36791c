"""Checks of the commands' arguments shared by their modules: counts and output paths, made before
any long work starts (each raises OptionError naming the option)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hired.errors import InputError, OptionError


def at_least(value: object, minimum: int, option: str) -> int:
    """``value`` as an int >= ``minimum``; OptionError otherwise (bools and floats included)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{option} must be an integer >= {minimum}; got {value!r}")
    return value


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a folder to write into, created if missing; OptionError if it is a file or
    cannot be created."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"{option} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OptionError(f"{option} {folder}: cannot create the folder ({error.strerror})") from None
    return folder


def output_file(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a file to write, its folder created if missing; OptionError if it is a folder
    or its folder cannot be created."""
    file = Path(path)
    if file.is_dir():
        raise OptionError(f"{option} {file} is a folder; give a file name such as kept.png")
    output_folder(file.parent, f"the folder of {option}")
    return file


def context_length(model_config: Any) -> int | None:
    """The language model's context (``max_position_embeddings`` of its text config), or None
    where the config does not say."""
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    limit = getattr(text, "max_position_embeddings", None)
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def check_context(model_config: Any, length: int, what: str = "the prompt") -> None:
    """InputError where a prompt of ``length`` tokens does not fit the language model's context:
    past it the model answers garbage, with no warning of its own."""
    limit = context_length(model_config)
    if limit is not None and length > limit:
        raise InputError(f"{what} is {length} tokens (image tokens included), longer than the model's context of "
                         f"{limit} tokens (max_position_embeddings); shorten the question or keep fewer image tokens")


def check_new_tokens(model_config: Any, new_tokens: int, option: str = "--max-new-tokens") -> None:
    """OptionError where ``new_tokens`` alone fill the language model's context (a huge count
    generated until the context was long past: a hang, then garbage)."""
    limit = context_length(model_config)
    if limit is not None and new_tokens >= limit:
        raise OptionError(f"{option} {new_tokens}: the model's context holds {limit} tokens, prompt included; "
                          f"ask for fewer than {limit}")
