"""hired: HiRED token dropping for high-resolution vision-language models."""

from hired.api import apply, from_pretrained, is_applied, planned_tokens, remove
from hired.config import HiREDConfig
from hired.core.report import HiREDReport, ImageReport
from hired.core.selection import select_tokens
from hired.errors import (
    ConfigError,
    HiREDError,
    ImageLoadError,
    ImageTokenMismatchError,
    UnsupportedModelError,
)

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
    "planned_tokens",
    "remove",
    "select_tokens",
]
__version__ = "0.1.0"
