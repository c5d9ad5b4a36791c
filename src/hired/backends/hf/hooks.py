"""CLS-token attention of chosen ViT layers, captured during a transformers model's own forward.

Forward hooks on a layer's ``q_proj`` and ``k_proj`` see the CLS query and all keys; the
CLS row softmax(q_cls K^T / sqrt(d)) is computed from them (:func:`hired.core.scoring.cls_attention`).
No N x N matrix is built and the attention kernel (SDPA, FlashAttention, eager) is left untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from hired.core.scoring import ScoreRequest, cls_attention


class CLSAttentionRecorder:
    """Records, for each named request, the CLS attention [B, T-1] of its layer's last forward,
    and the keys [B, T-1, D] of the layers in ``keep_keys``."""

    def __init__(self, attention_modules: dict[int, nn.Module], requests: dict[str, ScoreRequest],
                 keep_keys: Sequence[int] = ()):
        self.attention_modules = attention_modules
        self.requests = requests
        self.keep_keys = set(keep_keys)
        self.scores: dict[str, Tensor] = {}
        self.keys: dict[int, Tensor] = {}
        self._pending: dict[int, dict[str, Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, layer: int, kind: str):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            pending = self._pending.setdefault(layer, {})
            pending[kind] = output[:, 0].detach() if kind == "q" else output.detach()
            if len(pending) == 2:  # both projections seen, whatever their order
                del self._pending[layer]
                for name, request in self.requests.items():
                    if request.layer == layer:
                        self.scores[name] = cls_attention(pending["q"], pending["k"], request.heads, request.dtype)
                if layer in self.keep_keys:
                    self.keys[layer] = pending["k"][:, 1:]

        return hook

    def attach(self) -> None:
        for layer, attn in self.attention_modules.items():
            self._handles.append(attn.q_proj.register_forward_hook(self._hook(layer, "q")))
            self._handles.append(attn.k_proj.register_forward_hook(self._hook(layer, "k")))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()


@contextmanager
def record_cls_attention(
    attention_modules: dict[int, nn.Module], requests: dict[str, ScoreRequest], keep_keys: Sequence[int] = ()
) -> Iterator[CLSAttentionRecorder]:
    """Context manager: hooks attached on entry, always removed on exit (also on errors)."""
    recorder = CLSAttentionRecorder(attention_modules, requests, keep_keys)
    recorder.attach()
    try:
        yield recorder
    finally:
        recorder.detach()
