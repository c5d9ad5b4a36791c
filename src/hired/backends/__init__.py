"""Serving and inference backends that run the same per-image plan: ``hf`` (transformers)."""
