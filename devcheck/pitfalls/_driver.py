"""What the driver/build pitfalls (``cpu_only_wheel``, ``no_driver``, ``driver_too_old``)
share: the reproduction and the fix. Their preconditions ask ``devcheck.probe.devices``."""

from __future__ import annotations

__all__ = ["fall_back_to_cpu", "first_cuda_tensor"]


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
