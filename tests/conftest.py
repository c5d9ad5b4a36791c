import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_next():
    from hired.presets import tiny

    return tiny("llava_next")


@pytest.fixture(scope="session")
def tiny_llava():
    from hired.presets import tiny

    return tiny("llava")


@pytest.fixture(scope="session")
def tiny_models(tiny_next, tiny_llava):
    """The tiny model and processor of every family, built once."""
    from hired.families import FAMILIES
    from hired.presets import tiny

    built = {"llava_next": tiny_next, "llava": tiny_llava}
    return {name: built.get(name) or tiny(name) for name in FAMILIES}


@pytest.fixture
def model_next(tiny_next):
    """The tiny LLaVA-NeXT, unpatched again after each test."""
    import hired

    model, processor = tiny_next
    yield model, processor
    hired.remove(model)


def noise_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
