"""Errors raised by hired. Each names the problem in one line."""

from __future__ import annotations


class HiREDError(ValueError):
    """Base class of every error hired raises on bad input."""


class ConfigError(HiREDError):
    """A HiREDConfig value is out of range or of the wrong type."""


class UnsupportedModelError(HiREDError):
    """The model class or its vision tower is not one hired can patch."""


class ImageTokenMismatchError(HiREDError):
    """The prompt's image placeholders do not match the images given."""


class ImageLoadError(HiREDError):
    """An image file is missing, unreadable or truncated."""
