"""Timing one generate call: TTFT, decode tokens/s, end-to-end latency, peak memory."""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock(LogitsProcessor):
    """Stamps the time each new token's logits exist (after each forward of generate)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        synchronize(self.device)
        self.stamps.append(time.perf_counter())
        return scores


class PeakMemory:
    """Peak memory over a block: CUDA max allocated on GPU, peak RSS (VmHWM) on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes: int | None = None
        self.start_bytes: int | None = None  # allocated / resident at entry (weights and caches)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
        else:
            release_free_memory()
            reset_peak_rss()
            self.start_bytes = current_rss_bytes()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak_bytes = peak_rss_bytes()


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so that an earlier,
    larger call's freed-but-cached pages do not count in the next call's peak RSS."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def proc_status_bytes(field: str) -> int | None:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss_bytes() -> int | None:
    return proc_status_bytes("VmRSS")


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process (Linux); elsewhere a no-op."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    peak = proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@dataclass
class GenerationTiming:
    """One generate call. Times in seconds; ``throughput`` is the paper's new tokens / latency."""

    new_tokens: int
    ttft: float
    decode_time: float
    latency: float
    peak_memory_bytes: int | None
    memory_before_bytes: int | None = None  # allocated (CUDA) / resident (CPU) when the call began

    @property
    def decode_tokens_per_s(self) -> float:
        if self.new_tokens > 1 and self.decode_time > 0:
            return (self.new_tokens - 1) / self.decode_time
        return float("nan")

    @property
    def throughput(self) -> float:
        return self.new_tokens / self.latency

    def to_dict(self) -> dict:
        return {**asdict(self), "decode_tokens_per_s": self.decode_tokens_per_s, "throughput": self.throughput}


def timed_generate(model: torch.nn.Module, inputs: dict, max_new_tokens: int, force_length: bool = True,
                   **generate_kwargs: Any) -> tuple[torch.Tensor, GenerationTiming]:
    """Run ``model.generate`` once and time it. ``force_length`` makes it produce exactly
    ``max_new_tokens`` (random-weight models would stop at a random EOS)."""
    device = next(model.parameters()).device
    clock = StepClock(device)
    processors = LogitsProcessorList([*generate_kwargs.pop("logits_processor", []), clock])
    if force_length:
        generate_kwargs["min_new_tokens"] = max_new_tokens
    synchronize(device)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, logits_processor=processors, do_sample=False, **generate_kwargs
        )
        synchronize(device)
        end = time.perf_counter()
    stamps = clock.stamps
    timing = GenerationTiming(
        new_tokens=len(stamps),
        ttft=stamps[0] - start if stamps else end - start,
        decode_time=stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0,
        latency=end - start,
        peak_memory_bytes=memory.peak_bytes,
        memory_before_bytes=memory.start_bytes,
    )
    return output, timing
