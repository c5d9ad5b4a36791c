"""hired: HiRED token dropping for high-resolution vision-language models."""

from hired.api import apply, from_pretrained, is_applied, planned_tokens, remove
from hired.backends.hf.processors import processor_with_image_sizes
from hired.config import HiREDConfig
from hired.core.report import HiREDReport, ImageReport
from hired.core.selection import select_tokens
from hired.errors import (
    ConfigError,
    DataError,
    HiREDError,
    ImageLoadError,
    ImageTokenMismatchError,
    InputError,
    ModelLoadError,
    OptionError,
    UnsupportedModelError,
)

__all__ = [
    "ConfigError",
    "DataError",
    "HiREDConfig",
    "HiREDError",
    "HiREDReport",
    "ImageLoadError",
    "ImageReport",
    "ImageTokenMismatchError",
    "InputError",
    "ModelLoadError",
    "OptionError",
    "UnsupportedModelError",
    "apply",
    "from_pretrained",
    "is_applied",
    "planned_tokens",
    "processor_with_image_sizes",
    "remove",
    "select_tokens",
]
__version__ = "0.1.0"
