"""hired: HiRED token dropping for high-resolution vision-language models."""

from hired.api import apply, from_pretrained, is_applied, remove
from hired.config import HiREDConfig
from hired.errors import (
    ConfigError,
    HiREDError,
    ImageLoadError,
    ImageTokenMismatchError,
    UnsupportedModelError,
)
from hired.report import HiREDReport, ImageReport
from hired.selection import select_tokens

__all__ = [
    "ConfigError",
    "HiREDConfig",
    "HiREDError",
    "HiREDReport",
    "ImageLoadError",
    "ImageReport",
    "ImageTokenMismatchError",
    "UnsupportedModelError",
    "apply",
    "from_pretrained",
    "is_applied",
    "remove",
    "select_tokens",
]
__version__ = "0.1.0"
