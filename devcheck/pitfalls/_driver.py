"""What the driver/build pitfalls share: the reproduction and the fix (driver facts come from
``devcheck.probe.libcuda``)."""

from __future__ import annotations

from devcheck.probe.libcuda import cuda_version_str as fmt
from devcheck.probe.libcuda import driver_cuda_version

__all__ = ["driver_cuda_version", "fmt", "wheel_cuda_version", "first_cuda_tensor",
           "fall_back_to_cpu"]


def wheel_cuda_version() -> int | None:
    """The CUDA runtime this torch build bundles, as 13000 for '13.0'; None for CPU builds."""
    import torch

    if not torch.version.cuda:
        return None
    major, minor = (int(p) for p in torch.version.cuda.split(".")[:2])
    return major * 1000 + minor * 10


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
