"""Token scores from one layer's projected queries and keys (pure tensors): the CLS row of
softmax attention, or the attention each token receives.

Backends capture q and K as the model runs and hand them to
:class:`~hired.core.recorder.ScoreRecorder`, which calls these: one row of the attention
matrix, or query chunks of it, never the N x N matrix; the model's attention kernel is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ScoreRequest:
    """One score row to record: at encoder layer ``layer``, over ``heads`` heads (1 = the full
    width as one head), in ``dtype`` (None = the model's own dtype); ``kind`` "cls" (the CLS row,
    :func:`cls_attention`) or "received" (the mean attention each token receives,
    :func:`received_attention`)."""

    layer: int
    heads: int
    dtype: torch.dtype | None = torch.float32
    kind: str = "cls"


def cls_attention(q_cls: Tensor, keys: Tensor, num_heads: int, dtype: torch.dtype | None = torch.float32,
                  skip: int = 1) -> Tensor:
    """CLS row of softmax attention, summed over heads, CLS column dropped.

    q_cls: [B, D] projected CLS query; keys: [B, T, D] projected keys (CLS first).
    num_heads: 1 treats the full width as one head (scale D^-0.5), as PruMerge's reference does.
    dtype: the arithmetic's dtype; ``None`` keeps the inputs' (the model's) dtype, as the
    published HiRED code does (official mode), float32 by default.
    skip: leading columns (the CLS token) left out after the softmax.
    Returns [B, T - skip] attention of the CLS token to each patch token.
    """
    B, T, D = keys.shape
    d = D // num_heads
    dtype = dtype or keys.dtype
    q = q_cls.to(dtype).reshape(B, num_heads, 1, d)
    k = keys.to(dtype).reshape(B, T, num_heads, d).transpose(1, 2)  # [B, H, T, d]
    logits = (q @ k.transpose(-1, -2)).squeeze(-2) * d**-0.5  # [B, H, T]
    return logits.softmax(-1)[..., skip:].sum(1)


CHUNK_ELEMENTS = 1 << 24  # attention probabilities held at once by received_attention (64 MiB in float32)


def received_attention(queries: Tensor, keys: Tensor, num_heads: int, skip: int = 0, chunk: int | None = None
                       ) -> Tensor:
    """Mean softmax attention each token *receives*, over the queries and heads of one layer: the
    score of encoders with no CLS token (SigLIP), and ``HiREDConfig(score="received")`` on any.

    queries, keys: [B, T, D] projected q and K of one layer. The softmax runs over all T keys, as
    in the model; ``skip`` leading tokens (a CLS token) are then left out as queries and as
    scored keys. Computed in chunks of ``chunk`` queries (default: as many as fit
    :data:`CHUNK_ELEMENTS`): memory is B x H x chunk x T, never T x T. Returns [B, T - skip].
    """
    B, T, D = keys.shape
    d = D // num_heads
    chunk = chunk or max(64, CHUNK_ELEMENTS // max(1, B * num_heads * T))
    k = keys.float().reshape(B, T, num_heads, d).transpose(1, 2)  # [B, H, T, d]
    q_all = queries[:, skip:].float().reshape(B, T - skip, num_heads, d).transpose(1, 2)
    total = k.new_zeros(B, T - skip)
    for start in range(0, T - skip, chunk):
        q = q_all[:, :, start:start + chunk]
        total += ((q @ k.transpose(-1, -2)) * d**-0.5).softmax(-1)[..., skip:].sum((1, 2))
    return total / ((T - skip) * num_heads)
