"""Forward hooks that feed a transformers model's q and K to the score recorder.

A *q/K source* attaches hooks on one encoder layer and hands each forward's q and K, as the
layer's attention uses them, to :meth:`hired.core.recorder.ScoreRecorder.record`. The attention
kernel (SDPA, FlashAttention, eager) is never touched. :func:`recording` attaches the sources of
the layers a recorder needs and always removes them, also on errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from hired.core.recorder import ScoreRecorder

QKSource = Callable[[ScoreRecorder, int], list[RemovableHandle]]  # attach(recorder, layer) -> handles


def pair_source(q_module: nn.Module, k_module: nn.Module) -> QKSource:
    """q and K as the outputs ``[B, T, D]`` of two modules (``q_proj`` / ``k_proj``, or the q/k
    norms that follow them where the encoder has them, as InternViT), in either order."""

    def attach(recorder: ScoreRecorder, layer: int) -> list[RemovableHandle]:
        pending: dict[str, Tensor] = {}

        def hook(kind: str):
            def record(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
                pending[kind] = output
                if len(pending) == 2:  # both projections seen, whatever their order
                    recorder.record(layer, pending.pop("q"), pending.pop("k"))

            return record

        return [q_module.register_forward_hook(hook("q")), k_module.register_forward_hook(hook("k"))]

    return attach


@contextmanager
def recording(recorder: ScoreRecorder, sources: Mapping[int, QKSource]) -> Iterator[ScoreRecorder]:
    """Context manager: the sources of the recorder's layers attached on entry, always removed on exit."""
    handles: list[RemovableHandle] = []
    try:
        for layer in sorted(recorder.layers):
            handles.extend(sources[layer](recorder, layer))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
