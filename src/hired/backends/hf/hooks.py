"""Token scores of chosen ViT layers, captured during a transformers model's own forward.

Forward hooks on the modules that produce a layer's queries and keys (``q_proj`` / ``k_proj``, or
the q/k norms that follow them where the encoder has them, as InternViT) see q and K; the
score is computed from them (:mod:`hired.core.scoring`): the CLS row softmax(q_cls K^T / sqrt(d)),
or, with ``score="received"``, the mean attention each token receives, in query chunks. No N x N
matrix is built and the attention kernel (SDPA, FlashAttention, eager) is left untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from hired.core.scoring import ScoreRequest, cls_attention, received_attention

QKModules = tuple[nn.Module, nn.Module]  # the modules whose outputs are a layer's q and K


class CLSAttentionRecorder:
    """Records, for each named request, the scores [B, T'] of its layer's last forward, and the
    keys [B, T', D] of the layers in ``keep_keys`` (T' = T - 1 where the encoder has a CLS token,
    which is never scored)."""

    def __init__(self, qk_modules: dict[int, QKModules | nn.Module], requests: dict[str, ScoreRequest],
                 keep_keys: Sequence[int] = (), has_cls: bool = True):
        self.qk_modules = qk_modules
        self.requests = requests
        self.keep_keys = set(keep_keys)
        self.skip = 1 if has_cls else 0
        self.full_queries = {r.layer for r in requests.values() if r.kind == "received"}
        self.scores: dict[str, Tensor] = {}
        self.keys: dict[int, Tensor] = {}
        self._pending: dict[int, dict[str, Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, layer: int, kind: str):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            pending = self._pending.setdefault(layer, {})
            whole = kind == "k" or layer in self.full_queries
            pending[kind] = output.detach() if whole else output[:, 0].detach()
            if len(pending) == 2:  # both projections seen, whatever their order
                del self._pending[layer]
                q, k = pending["q"], pending["k"]
                for name, request in self.requests.items():
                    if request.layer != layer:
                        continue
                    if request.kind == "received":
                        self.scores[name] = received_attention(q, k, request.heads, self.skip)
                    else:
                        self.scores[name] = cls_attention(q if q.dim() == 2 else q[:, 0], k, request.heads,
                                                          request.dtype)
                if layer in self.keep_keys:
                    self.keys[layer] = k[:, self.skip:]

        return hook

    def attach(self) -> None:
        for layer, modules in self.qk_modules.items():
            # an attention module stands for its own q_proj / k_proj (CLIP, SigLIP)
            q_module, k_module = (modules.q_proj, modules.k_proj) if isinstance(modules, nn.Module) else modules
            self._handles.append(q_module.register_forward_hook(self._hook(layer, "q")))
            self._handles.append(k_module.register_forward_hook(self._hook(layer, "k")))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()


@contextmanager
def record_cls_attention(
    qk_modules: dict[int, QKModules | nn.Module], requests: dict[str, ScoreRequest], keep_keys: Sequence[int] = (),
    has_cls: bool = True,
) -> Iterator[CLSAttentionRecorder]:
    """Context manager: hooks attached on entry, always removed on exit (also on errors)."""
    recorder = CLSAttentionRecorder(qk_modules, requests, keep_keys, has_cls)
    recorder.attach()
    try:
        yield recorder
    finally:
        recorder.detach()
