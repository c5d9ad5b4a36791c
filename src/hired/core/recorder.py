"""The one score recorder: token scores of chosen encoder layers from q and K as the layer's
attention uses them (pure tensors; every backend feeds it from its own hooks).

Backends see q and K in different shapes and pass them on unchanged:

- separate q / K (transformers' CLIP, SigLIP, InternViT) or one fused qkv output
  (:meth:`ScoreRecorder.record_qkv`: vLLM's encoders, Qwen's ViT), laid out ``[q | k | v]``;
- with a batch axis (``[B, T, D]``, one row per crop) or packed (``[T, D]``, the images' tokens
  one after another, as Qwen's ViT and vLLM's native-resolution encoders run them), with
  ``segments`` = each image's token count;
- whole, or sharded by heads over a tensor-parallel group (``local_heads`` of them on this rank;
  the group's ``all_reduce`` / ``all_gather`` are passed in as callables, so the math is tested
  with simulated shards). Per-head softmax rows are complete on the rank that owns the head, so
  the sum over heads is the sum over ranks of per-rank sums: every rank ends with the same scores.

Rotary embeddings, where the model applies them after the projection (Qwen), are applied by the
backend's hook before it calls :meth:`ScoreRecorder.record`. Scores come out in the order the
layer holds the tokens; where that is not the model's (Qwen2.5-VL's window order, a permutation
within each image, which received attention at a global layer does not depend on), the image's
layout (``ImageLayout.sources``) names each token's patches in that order. The recorder computes the CLS row
(:func:`~hired.core.scoring.cls_attention`) or the attention each token receives
(:func:`~hired.core.scoring.received_attention`, in query chunks): never a T x T matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from hired.core.scoring import ScoreRequest, cls_attention, received_attention

Collective = Callable[[Tensor], Tensor]
Recorded = Tensor | list[Tensor]  # [B, T'] batched, or one [1, T_i'] per image when packed


class ScoreRecorder:
    """Scores of the named requests (``scores[name]``) and the keys of ``keep_keys`` layers
    (``keys[layer]``, patch tokens only, all heads), from the last call for each layer.

    requests: name -> :class:`ScoreRequest` (layer, heads of the whole encoder or 1 for one
    full-width head, dtype, kind). has_cls: the encoder prepends a CLS token (never scored).
    local_heads: heads of this rank (default: all). tp_size, all_reduce, all_gather: the
    tensor-parallel group (``None``: not sharded).
    """

    def __init__(self, requests: Mapping[str, ScoreRequest], has_cls: bool = True, keep_keys: Sequence[int] = (),
                 local_heads: int | None = None, tp_size: int = 1, all_reduce: Collective | None = None,
                 all_gather: Collective | None = None):
        self.requests = dict(requests)
        self.skip = 1 if has_cls else 0
        self.keep_keys = set(keep_keys)
        self.local_heads = local_heads
        self.tp_size = tp_size
        self.all_reduce = all_reduce if tp_size > 1 else None
        self.all_gather = all_gather if tp_size > 1 else None
        self.scores: dict[str, Recorded] = {}
        self.keys: dict[int, Recorded] = {}

    @property
    def layers(self) -> set[int]:
        """The encoder layers whose q and K the recorder needs."""
        return {request.layer for request in self.requests.values()} | self.keep_keys

    def clear(self) -> None:
        self.scores, self.keys = {}, {}

    def record_qkv(self, layer: int, qkv: Tensor, segments: Sequence[int] | None = None) -> None:
        """One layer's fused projection output ``[..., 3 * D]`` laid out ``[q | k | v]``."""
        q, k, _ = qkv.chunk(3, dim=-1)
        self.record(layer, q, k, segments)

    def record(self, layer: int, q: Tensor, k: Tensor, segments: Sequence[int] | None = None) -> None:
        """One layer's q and K as its attention uses them: ``[B, T, D]``, or packed ``[T, D]``
        with ``segments`` (each image's token count; the attention runs within each)."""
        if layer not in self.layers:
            return
        with torch.no_grad():
            q, k = q.detach(), k.detach()
            if segments is None:
                pieces = [(q, k)]
            else:
                lengths = [int(s) for s in segments]
                pieces = [(qs[None], ks[None]) for qs, ks in zip(q.split(lengths), k.split(lengths))]
            computed: dict[ScoreRequest, list[Tensor]] = {}  # the same request twice (init == final) once
            for name, request in self.requests.items():
                if request.layer == layer:
                    if request not in computed:
                        computed[request] = [self.score(qs, ks, request) for qs, ks in pieces]
                    out = computed[request]
                    self.scores[name] = out[0] if segments is None else out
            if layer in self.keep_keys:
                out = [self.gather(ks[:, self.skip:].contiguous()) for _, ks in pieces]
                self.keys[layer] = out[0] if segments is None else out

    def gather(self, local: Tensor) -> Tensor:
        """All heads' columns from this rank's (rank-major along the last axis, the unsharded order)."""
        return self.all_gather(local) if self.all_gather is not None else local

    def score(self, q: Tensor, k: Tensor, request: ScoreRequest) -> Tensor:
        """The request's scores [B, T - skip] from one [B, T, D_local] piece, the same on every rank."""
        if request.heads == 1:  # one full-width head: its softmax needs the whole width
            if request.kind == "received" or self.all_reduce is None:
                q, k = self.gather(q.contiguous()), self.gather(k.contiguous())
                if request.kind == "received":
                    return received_attention(q, k, 1, self.skip)
                return cls_attention(q[:, 0], k, 1, request.dtype, self.skip)
            dtype = request.dtype or k.dtype  # dot products split by columns: sum the partial logits
            logits = self.all_reduce((q[:, :1].to(dtype) * k.to(dtype)).sum(-1))
            width = k.shape[-1] * self.tp_size
            return (logits * width**-0.5).softmax(-1)[..., self.skip:]
        local = self.local_heads or request.heads
        if request.kind == "received":
            partial = received_attention(q, k, local, self.skip) * local  # summed over local heads
            total = self.all_reduce(partial) if self.all_reduce is not None else partial
            return total / request.heads
        partial = cls_attention(q[:, 0], k, local, request.dtype, self.skip)
        return self.all_reduce(partial) if self.all_reduce is not None else partial
