"""The transformers backend: a reversible patch of ``forward`` / ``generate`` (one class for every
family, reading the family's row of :mod:`hired.backends.hf.table`), score hooks on the vision
layers, prompt shrinking, and processors without torchvision."""

from hired.backends.hf.patch import HFPatch, ImageEncoder, PatchedMethod

__all__ = ["HFPatch", "ImageEncoder", "PatchedMethod"]
