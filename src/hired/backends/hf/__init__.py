"""The transformers backend: a reversible patch of ``forward`` / ``generate``, CLS-score hooks
on the vision layers, and prompt shrinking."""

from hired.backends.hf.patch import HFPatch

__all__ = ["HFPatch"]
