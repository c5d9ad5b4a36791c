"""Errors raised by hired. Each names the problem in one line."""

from __future__ import annotations


class HiREDError(ValueError):
    """Base class of every error hired raises on bad input."""


class ConfigError(HiREDError):
    """A HiREDConfig value is out of range or of the wrong type."""


class UnsupportedModelError(HiREDError):
    """The model class or its vision tower is not one hired can patch."""


class ModelLoadError(HiREDError):
    """A model cannot be loaded: no such folder, no checkpoint in it, or a hub id with no hub."""


class ImageTokenMismatchError(HiREDError):
    """The prompt's image placeholders do not match the images given."""


class ImageLoadError(HiREDError):
    """An image file is missing, unreadable, truncated or too large to decode safely."""


class InputError(HiREDError):
    """The arguments of a patched ``forward``/``generate`` call cannot be used: no input_ids,
    pixel values that are not finite, arguments the model does not take."""


class DataError(HiREDError):
    """Evaluation data is missing, not JSONL, or holds an unusable item (no answer, a repeated id)."""


class OptionError(HiREDError):
    """A command option is out of range or names an unusable path."""
