"""CLS attention inside vLLM's vision tower, whose attention is fused and returns no weights.

vLLM's CLIP layer runs ``qkv_proj`` (one fused ``QKVParallelLinear``) on the layer-normed input
and hands q, k, v to its attention kernel, which returns no weights. A forward hook on that
``qkv_proj`` (of the early and the final scoring layer only) sees its output, ``[B, T, 3 * D_r]``
on tensor-parallel rank r, laid out ``[q_r | k_r | v_r]`` where ``D_r = H_r * d`` covers the
``H_r`` heads that rank owns (``QKVParallelLinear`` shards whole heads, rank-major). From it:

1. on every rank, the CLS row of softmax attention of each *local* head, q_cls . K / sqrt(d),
   softmax over CLS and patches, summed over the local heads
   (:func:`hired.core.scoring.cls_attention` on the local slice): ``[B, T - 1]``, never ``T x T``;
2. across ranks, an all-reduce (sum) of those partial sums. The softmax is per head, so each
   head's row is complete on the rank that owns it and the sum over all heads is the sum of the
   per-rank sums: every rank ends with the same scores as one unsharded tower;
   (policies that score with one full-width head, as PruMerge's reference does, all-reduce the
   partial logits q_cls . K over each rank's columns instead, then take the softmax;)
3. for policies that merge (they need the final layer's keys of all heads), an all-gather of the
   local keys along the feature dimension, rank-major, which is the unsharded head order.

Then every rank runs the same policy and plan on the same scores (deterministic), so the ranks
agree on which tokens to keep without exchanging masks. With vLLM's data-parallel ViT mode
(``mm_encoder_tp_mode="data"``) the tower is not sharded (``tp_size`` of the attention is 1) and
nothing is exchanged. Pure torch: the collectives come in as callables, so the math is tested
with simulated shards and no vLLM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from hired.core.scoring import ScoreRequest, cls_attention

Collective = Callable[[Tensor], Tensor]


def split_qkv(qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v of one rank's fused projection output ``[B, T, 3 * D_r]`` (vLLM's CLIP splits it
    the same way: ``qkv.chunk(3, dim=-1)``)."""
    q, k, v = qkv.chunk(3, dim=-1)
    return q, k, v


def partial_cls_attention(qkv: Tensor, local_heads: int, dtype: torch.dtype | None = torch.float32) -> Tensor:
    """One rank's share of the CLS row: softmax attention of CLS to each patch token, summed over
    this rank's ``local_heads`` heads, CLS column dropped. ``[B, T - 1]``."""
    q, k, _ = split_qkv(qkv)
    return cls_attention(q[:, 0], k, local_heads, dtype)


def partial_cls_logits(qkv: Tensor, dtype: torch.dtype | None = torch.float32) -> Tensor:
    """One rank's share of the one-head (full-width) CLS logits, q_cls . K over its columns,
    unscaled: ``[B, T]``. The full logits are the sum over ranks (a dot product splits by columns)."""
    q, k, _ = split_qkv(qkv)
    dtype = dtype or k.dtype
    return (q[:, :1].to(dtype) * k.to(dtype)).sum(-1)


def one_head_cls_attention(logits: Tensor, width: int) -> Tensor:
    """Softmax of the summed one-head logits (scale width^-0.5), CLS column dropped: the
    ``heads=1`` case of :func:`hired.core.scoring.cls_attention` from all-reduced logits."""
    return (logits * width**-0.5).softmax(-1)[..., 1:]


class QKVScoreRecorder:
    """Forward hooks on the ``qkv_proj`` of the scoring layers; inactive (a flag test) except
    inside :meth:`recording`.

    layers: layer index -> that layer's ``qkv_proj``. requests: name -> :class:`ScoreRequest`
    (layer, heads of the whole tower or 1 for one full-width head, dtype). local_heads, tp_size:
    this rank's heads and the tensor-parallel size of the tower. all_reduce / all_gather: the
    group's collectives (``None`` when the tower is not sharded). keep_keys: layers whose keys
    (patches only, all heads, gathered) are kept for merging.
    """

    def __init__(self, layers: dict[int, nn.Module], requests: dict[str, ScoreRequest], local_heads: int,
                 tp_size: int = 1, all_reduce: Collective | None = None, all_gather: Collective | None = None,
                 keep_keys: tuple[int, ...] = ()):
        self.requests = requests
        self.local_heads, self.tp_size = local_heads, tp_size
        self.all_reduce, self.all_gather = all_reduce, all_gather
        self.keep_keys = set(keep_keys)
        self.active = False
        self.scores: dict[str, Tensor] = {}
        self.keys: dict[int, Tensor] = {}
        self._handles = [module.register_forward_hook(self._hook(layer)) for layer, module in layers.items()]

    def score(self, qkv: Tensor, request: ScoreRequest) -> Tensor:
        """The request's CLS row from this rank's qkv, the same on every rank."""
        if request.heads == 1:  # one full-width head: sum the logits over ranks, then softmax
            if self.all_reduce is None:
                q, k, _ = split_qkv(qkv)
                return cls_attention(q[:, 0], k, 1, request.dtype)
            width = split_qkv(qkv)[1].shape[-1] * self.tp_size
            return one_head_cls_attention(self.all_reduce(partial_cls_logits(qkv, request.dtype)), width)
        scores = partial_cls_attention(qkv, self.local_heads, request.dtype)  # per-head softmax, local heads
        return self.all_reduce(scores) if self.all_reduce is not None else scores

    def _hook(self, layer: int):
        def hook(_module: nn.Module, _inputs: tuple, output) -> None:
            if not self.active:
                return
            qkv = output[0] if isinstance(output, tuple) else output
            with torch.no_grad():
                for name, request in self.requests.items():
                    if request.layer == layer:
                        self.scores[name] = self.score(qkv, request)
                if layer in self.keep_keys:
                    keys = split_qkv(qkv)[1][:, 1:]
                    self.keys[layer] = self.all_gather(keys.contiguous()) if self.all_gather is not None else keys

        return hook

    @contextmanager
    def recording(self) -> Iterator[QKVScoreRecorder]:
        self.scores, self.keys, self.active = {}, {}, True
        try:
            yield self
        finally:
            self.active = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
