"""Loading pictures with errors that name the problem."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hired.errors import ImageLoadError


def load_image(path: str | Path) -> Image.Image:
    """An RGB PIL image, fully decoded; a missing, unreadable or truncated file raises
    ImageLoadError."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: truncated files fail here, not deep inside the model
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path} is not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"{path} is truncated or corrupt: {error}") from None
