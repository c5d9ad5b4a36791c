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

from hired.core.scoring import cls_attention, received_attention

QKModules = tuple[nn.Module, nn.Module]  # the modules whose outputs are a layer's q and K


class CLSAttentionRecorder:
    """Records, for each requested layer, the token scores [B, T'] of its last forward
    (T' = T - 1 where the encoder has a CLS token, which is never scored)."""

    def __init__(self, qk_modules: dict[int, QKModules | nn.Module], num_heads: int, keep_keys: Sequence[int] = (),
                 score: str = "cls", has_cls: bool = True):
        self.qk_modules = qk_modules
        self.num_heads = num_heads
        self.keep_keys = set(keep_keys)
        self.score = score
        self.skip = 1 if has_cls else 0
        self.scores: dict[int, Tensor] = {}
        self.keys: dict[int, Tensor] = {}
        self._pending: dict[int, dict[str, Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, layer: int, kind: str):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            pending = self._pending.setdefault(layer, {})
            pending[kind] = output[:, 0].detach() if kind == "q" and self.score == "cls" else output.detach()
            if len(pending) == 2:  # both projections seen, whatever their order
                del self._pending[layer]
                if self.score == "cls":
                    self.scores[layer] = cls_attention(pending["q"], pending["k"], self.num_heads)
                else:
                    self.scores[layer] = received_attention(pending["q"], pending["k"], self.num_heads, self.skip)
                if layer in self.keep_keys:
                    self.keys[layer] = pending["k"][:, self.skip:]

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
    qk_modules: dict[int, QKModules | nn.Module], num_heads: int, keep_keys: Sequence[int] = (), score: str = "cls",
    has_cls: bool = True,
) -> Iterator[CLSAttentionRecorder]:
    """Context manager: hooks attached on entry, always removed on exit (also on errors)."""
    recorder = CLSAttentionRecorder(qk_modules, num_heads, keep_keys, score, has_cls)
    recorder.attach()
    try:
        yield recorder
    finally:
        recorder.detach()
