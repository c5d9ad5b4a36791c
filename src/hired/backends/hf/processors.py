"""Processors of transformers checkpoints as hired uses them: without torchvision, and (InternVL)
returning each image's size.

transformers' video processors need torchvision, images do not, and some checkpoints' processors
load one even for images (LLaVA-OneVision): :func:`processor_without_video` builds the same
processor from the checkpoint's image processor, tokenizer and saved options. InternVL's
processor does not return the pictures' sizes, which tell how an image's tiles are arranged:
:func:`processor_with_image_sizes` adds ``image_sizes``.
"""

from __future__ import annotations

import inspect
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hired.errors import UnsupportedModelError


def processor_options(cls: type) -> set[str]:
    """The options a processor class takes besides its sub-processors (saved in processor_config.json)."""
    return set(inspect.signature(cls.__init__).parameters) - {
        "self", "image_processor", "tokenizer", "video_processor", "chat_template", "args", "kwargs"}


@lru_cache(maxsize=None)
def without_video_processor(cls: type) -> type:
    """``cls`` (a transformers processor class) that accepts ``video_processor=None``: without
    torchvision its class check of the (absent) video processor fails, and images need none. It
    saves as ``cls`` does, minus the video processor (:func:`processor_without_video` loads it)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return cls.check_argument_for_proper_class(self, argument_name, argument)

    def save_pretrained(self, save_directory, **kwargs):
        if self.video_processor is not None:
            return cls.save_pretrained(self, save_directory, **kwargs)
        self.image_processor.save_pretrained(save_directory)
        self.tokenizer.save_pretrained(save_directory)
        options = {name: getattr(self, name) for name in sorted(processor_options(cls)) if hasattr(self, name)}
        options = {k: v for k, v in options.items() if isinstance(v, (str, int, float, bool, list, dict))}
        config = {"processor_class": cls.__name__, **options}
        (Path(save_directory) / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if self.chat_template:
            (Path(save_directory) / "chat_template.jinja").write_text(self.chat_template)
        return [str(save_directory)]

    return type(cls.__name__, (cls,), {"check_argument_for_proper_class": check_argument_for_proper_class,
                                       "save_pretrained": save_pretrained, "__module__": cls.__module__})


def processor_without_video(model_id: str, **kwargs: Any) -> Any:
    """A checkpoint's processor built from its image processor, tokenizer and saved processor
    options, with no video processor."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.processing_utils import ProcessorMixin

    options, _ = ProcessorMixin.get_processor_dict(model_id, **kwargs)
    name = options.get("processor_class")
    base = getattr(transformers, name, None) if isinstance(name, str) else None
    if base is None:
        raise UnsupportedModelError(f"{model_id}: its processor_class {name!r} is not a transformers processor")
    accepted = processor_options(base) | {"chat_template"}
    return without_video_processor(base)(
        image_processor=AutoImageProcessor.from_pretrained(model_id, **kwargs),
        tokenizer=AutoTokenizer.from_pretrained(model_id, **kwargs),
        video_processor=None,
        **{key: value for key, value in options.items() if key in accepted},
    )


def load_processor(model_id: str, **kwargs: Any) -> Any:
    """The processor of a checkpoint (hub id or folder), as transformers loads it; where its
    video processor cannot load (it needs torchvision), the same processor without one."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    try:
        return AutoProcessor.from_pretrained(model_id, **kwargs)
    except (ImportError, ValueError):  # transformers' "requires torchvision", as either
        if is_torchvision_available():
            raise
        return processor_without_video(model_id, **kwargs)


# -- InternVL: the pictures' sizes ------------------------------------------------------------------
@lru_cache(maxsize=1)
def _internvl_processor_class():
    from transformers import InternVLProcessor

    class InternVLProcessorWithSizes(without_video_processor(InternVLProcessor)):
        """InternVL's processor that also returns ``image_sizes`` [images, 2] (height, width), which
        the patched model needs to know how each image's tiles are arranged (and accepts no video
        processor). Images given as paths or URLs are loaded once, here, as transformers loads them."""

        def __call__(self, images=None, text=None, videos=None, **kwargs):
            if images is not None:
                images = loaded_images(images)
            out = super().__call__(images=images, text=text, videos=videos, **kwargs)
            if images is not None:
                layout = kwargs.get("input_data_format")
                sizes = [image_size_of(image, layout) for image in flatten_images(images)]
                return_tensors = kwargs.get("return_tensors")
                out["image_sizes"] = torch.tensor(sizes) if return_tensors == "pt" else sizes
            return out

    return InternVLProcessorWithSizes


def flatten_images(images: Any) -> list:
    if isinstance(images, (list, tuple)):
        return [leaf for item in images for leaf in flatten_images(item)]
    return [images]


def loaded_images(images: Any) -> Any:
    """``images`` with every path or URL (a string) replaced by the picture transformers loads
    from it, in the same nesting."""
    if isinstance(images, (list, tuple)):
        return type(images)(loaded_images(item) for item in images)
    if isinstance(images, str):
        from transformers.image_utils import load_image

        return load_image(images)
    return images


def image_size_of(image: Any, input_data_format: Any = None) -> tuple[int, int]:
    """(height, width) of a PIL image, an array or a tensor, read as the image processor reads it:
    a PIL image by its size, an array's channel axis as given or inferred as transformers infers it
    (a 1 x 100 RGB array is ambiguous there too)."""
    import numpy as np
    from PIL import Image
    from transformers.image_utils import ChannelDimension, infer_channel_dimension_format

    if isinstance(image, Image.Image):
        return int(image.height), int(image.width)
    array = image.numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim == 2:
        return int(array.shape[0]), int(array.shape[1])
    if input_data_format is None:
        input_data_format = infer_channel_dimension_format(array, num_channels=(1, 3, 4))
    height, width = array.shape[-2:] if ChannelDimension(input_data_format) == ChannelDimension.FIRST \
        else array.shape[-3:-1]
    return int(height), int(width)


def processor_with_image_sizes(processor: Any) -> Any:
    """An InternVL processor (loaded or built) that also returns ``image_sizes``."""
    cls = _internvl_processor_class()
    if isinstance(processor, cls):
        return processor
    return cls(
        image_processor=processor.image_processor, tokenizer=processor.tokenizer,
        video_processor=getattr(processor, "video_processor", None), image_seq_length=processor.image_seq_length,
        chat_template=getattr(processor, "chat_template", None),
    )
