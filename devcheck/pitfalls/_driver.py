"""Tiny driver probes for the lab's children (ctypes on libcuda; no pynvml, no CUDA init)."""

from __future__ import annotations

import ctypes
import sys


def driver_cuda_version() -> int | None:
    """The newest CUDA the installed driver supports (e.g. 13000), or None without a driver."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value


def wheel_cuda_version() -> int | None:
    """The CUDA runtime this torch build bundles, as 13000 for '13.0'; None for CPU builds."""
    import torch

    if not torch.version.cuda:
        return None
    major, minor = (int(p) for p in torch.version.cuda.split(".")[:2])
    return major * 1000 + minor * 10


def fmt(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def first_cuda_tensor(device: str) -> None:
    """The reproduction the driver/build pitfalls share: the first CUDA tensor starts CUDA,
    which is where a missing driver, an old driver or a CPU-only build surfaces."""
    import torch

    torch.zeros(1, device="cuda")


def fall_back_to_cpu(hint: str) -> str:
    """The fix they share: ask is_available() first and fall back to the CPU, saying how to
    get the GPU back (``hint``)."""
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return f"fell back to {torch.zeros(1, device=dev).device} ({hint})"
