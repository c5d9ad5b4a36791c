"""Loading pictures as transformers' own loader does, with errors that name the problem.

Like ``transformers.image_utils.load_image`` (and its processors' ``convert_to_rgb``), a picture is
turned upright by its EXIF orientation and any transparency (RGBA, LA, PA, P or L with a
transparent colour) is composited on white. Beyond it, pictures of more than 8 bits per sample
(16-bit PNGs: modes I;16 and I; float TIFFs: mode F) are scaled to 8 bits instead of clipped,
and pixels that are not finite are refused.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hired.errors import ImageLoadError

DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits per sample


def eight_bit(image: Image.Image, name: str = "image") -> Image.Image:
    """A greyscale picture of more than 8 bits (``DEEP_MODES``) as mode L, its range scaled to
    0-255: 16-bit modes from 0-65535; mode I from 0-255, 0-65535 or its maximum, whichever first
    holds its values; mode F from 0-1, 0-255 or its maximum likewise. Negative values become 0."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ImageLoadError(f"{name} holds NaN or infinite pixel values")
    top = float(values.max(initial=0.0))
    if image.mode.startswith("I;16"):
        scale = 65535.0
    else:
        limits = (1.0, 255.0, 65535.0) if image.mode == "F" else (255.0, 65535.0)
        scale = next((limit for limit in limits if top <= limit), top)
    return Image.fromarray(np.clip(np.rint(values * (255.0 / scale)), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """An RGB copy of ``image`` as transformers' processors see it (transparency on white), with
    deep greyscale scaled to 8 bits (see :func:`eight_bit`)."""
    if image.mode in DEEP_MODES:
        image = eight_bit(image, name)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise ImageLoadError(f"{name} has pixel mode {image.mode}, which cannot be turned into RGB: {error}") from None


def load_image(path: str | Path) -> Image.Image:
    """An RGB PIL image, fully decoded, upright and on white as transformers' loader gives it; a
    missing, unreadable, truncated or decompression-bomb-sized file raises ImageLoadError. URLs are
    not downloaded: one is refused as such (Path would read "https://x" as the file "https:/x")."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://|^data:", str(path)):
        raise ImageLoadError(f"{path} is a URL; hired reads local image files only (download it first)")
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # decode now: truncated files fail here, not deep inside the model
                return to_rgb(ImageOps.exif_transpose(image), str(path))
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path} is not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        size = re.search(r"\((\d+) pixels\)", str(error))
        raise ImageLoadError(
            f"{path} is too large to decode safely ({size.group(1) if size else 'too many'} pixels; Pillow's limit "
            f"against decompression bombs is {Image.MAX_IMAGE_PIXELS}, PIL.Image.MAX_IMAGE_PIXELS)"
        ) from None
    except (OSError, SyntaxError, ValueError, MemoryError) as error:
        if isinstance(error, ImageLoadError):
            raise
        raise ImageLoadError(f"{path} is truncated or corrupt: {error}") from None
