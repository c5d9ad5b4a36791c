"""What a benchmark ran on: versions, device, threads; and the optional CUDA memory cap."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

import hired
from hired.bench.settings import BenchSettings


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "hired": hired.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "dtype": str(dtype).replace("torch.", ""),
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        env["gpu_total_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    return env


def apply_memory_cap(settings: BenchSettings, device: torch.device, notes: list[str]) -> None:
    if settings.memory_cap_gb is None:
        return
    if device.type != "cuda":
        notes.append(f"--memory-cap-gb {settings.memory_cap_gb:g} ignored: the cap only applies to CUDA devices")
        return
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, settings.memory_cap_gb * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    notes.append(f"CUDA memory capped at {settings.memory_cap_gb:g} GiB ({fraction:.3f} of {total / 2**30:.1f} GiB)")
