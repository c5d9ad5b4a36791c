"""Scores inside vLLM's vision towers, whose attention is fused and returns no weights.

vLLM's CLIP layer runs ``qkv_proj`` (one fused ``QKVParallelLinear``) on the layer-normed input
and hands q, k, v to its attention kernel. A forward hook on that ``qkv_proj`` (of the scoring
layers only) sees its output, ``[B, T, 3 * D_r]`` on tensor-parallel rank r, laid out
``[q_r | k_r | v_r]`` where ``D_r = H_r * d`` covers the ``H_r`` heads that rank owns
(``QKVParallelLinear`` shards whole heads, rank-major), and hands it to the engine-neutral
:class:`hired.core.recorder.ScoreRecorder` with the group's collectives: per-rank partial sums
over the rank's heads, all-reduced, so every rank ends with the scores of one unsharded tower
and runs the same policy on them (deterministic): the ranks agree on which tokens to keep
without exchanging masks. With vLLM's data-parallel ViT mode (``mm_encoder_tp_mode="data"``) the
tower is not sharded (``tp_size`` of the attention is 1) and nothing is exchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from hired.core.recorder import ScoreRecorder


def tensor_parallel(attention: nn.Module) -> dict:
    """The recorder's tensor-parallel arguments for a vLLM attention module: this rank's heads,
    the group size and its collectives (none when the tower is not sharded). Imports vLLM."""
    tp_size = int(getattr(attention, "tp_size", 1))
    local_heads = int(attention.num_heads_per_partition)
    if tp_size <= 1:
        return {"local_heads": local_heads, "tp_size": 1}
    from vllm.distributed import tensor_model_parallel_all_gather, tensor_model_parallel_all_reduce

    def all_gather(t: Tensor) -> Tensor:
        return tensor_model_parallel_all_gather(t, dim=-1)

    return {"local_heads": local_heads, "tp_size": tp_size, "all_reduce": tensor_model_parallel_all_reduce,
            "all_gather": all_gather}


class QKVHooks:
    """Forward hooks on the fused ``qkv_proj`` of the scoring layers that feed ``recorder``;
    inactive (a flag test) except inside :meth:`recording`. vLLM's linear layers return
    ``(output, bias)``."""

    def __init__(self, modules: dict[int, nn.Module], recorder: ScoreRecorder):
        self.recorder = recorder
        self.active = False
        self._handles = [module.register_forward_hook(self._hook(layer)) for layer, module in modules.items()]

    def _hook(self, layer: int):
        def hook(_module: nn.Module, _inputs: tuple, output) -> None:
            if self.active:
                self.recorder.record_qkv(layer, output[0] if isinstance(output, tuple) else output)

        return hook

    @contextmanager
    def recording(self) -> Iterator[ScoreRecorder]:
        self.recorder.clear()
        self.active = True
        try:
            with torch.no_grad():
                yield self.recorder
        finally:
            self.active = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
