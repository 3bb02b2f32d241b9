"""Which device the trainer runs on, and why a requested one cannot be used.

This module is the trainer's one seam to device questions, asked through devcheck's probes
(:mod:`devcheck.probe.devices`, the hardware boundary): tests patch
:func:`cuda_device_count` / :func:`mps_available` to fake GPUs, and nothing else in
``softmax`` asks torch about devices. The *reasons* are not worked out here: they come from
devcheck's doctor (``devcheck.checkup.device_availability``), so ``softmax`` and
``devcheck doctor`` never disagree about why CUDA is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from devcheck.probe import devices as probe

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


class DeviceError(Exception):
    """The requested device cannot be used here; the message says why and what to use."""


def cuda_device_count() -> int:
    """The one seam for 'how many CUDA devices': tests patch this to fake GPUs."""
    return probe.cuda_device_count() if probe.cuda_available() else 0


def mps_available() -> bool:
    """The one seam for 'is there an Apple GPU'."""
    return probe.mps_available()


def _doctor_reason(kind: str) -> str:
    """Doctor's reason why ``kind`` ("cuda" or "mps") is unusable.

    Asked without the live check (the trainer does its own work on the device) and only on
    the failure path, so a healthy run never pays for the doctor's probes."""
    from devcheck.checkup import device_availability

    reason = getattr(device_availability(live=False), f"{kind}_reason")
    if reason:
        return str(reason)
    # The doctor found the device usable but the count here says no (a GPU that vanished
    # between the two questions, or a test faking zero GPUs): say what was seen.
    return f"torch reports no usable {kind.upper()} device in this process"


def cuda_reason() -> str:
    """Why CUDA is not usable, in the doctor's words."""
    return _doctor_reason("cuda")


def mps_reason() -> str:
    """Why MPS is not usable, in the doctor's words."""
    return _doctor_reason("mps")


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a concrete device, or raise DeviceError."""
    text = spec.strip().lower()
    if text == "auto":
        if cuda_device_count() > 0:
            return torch.device("cuda", 0)
        return torch.device("mps") if mps_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {spec!r} is not a device name; expected "
                          f"{DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        return _cuda_device(spec, device.index)
    if device.type == "mps":
        if not mps_available():
            raise DeviceError(f"--device {spec}: MPS is not usable here: {mps_reason()}. "
                              f"Use --device cpu (or auto); `devcheck doctor` shows the fix.")
        return device
    raise DeviceError(f"--device {spec}: device type {device.type!r} is not supported here; "
                      f"expected {DEVICE_CHOICES}")


def _cuda_device(spec: str, index: int | None) -> torch.device:
    count = cuda_device_count()
    if count == 0:
        raise DeviceError(f"--device {spec}: CUDA is not usable here: {cuda_reason()}. "
                          f"Use --device cpu (or auto); `devcheck doctor` shows the fix.")
    index = 0 if index is None else index
    if index >= count:
        raise DeviceError(
            f"--device {spec}: this machine has {count} visible CUDA device(s) "
            f"(cuda:0..cuda:{count - 1}); expected an index below {count}. Use "
            f"--device cuda:0 (CUDA_VISIBLE_DEVICES renumbers the visible GPUs from 0).")
    return torch.device("cuda", index)


def cpu_count() -> int:
    """Logical CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Scope torch's intra-op thread count to the run, restoring it after.

    Why 1 by default for the tensor loader on CPU: its matmuls are tiny (256x784x10), so a
    second thread buys little, and when another process takes a core the OpenMP threads
    spin-wait on each other: on the 2-core reference machine epochs then jumped from 65 ms
    to over a second. One thread runs at the same speed and never stalls that way.
    """
    previous = torch.get_num_threads()
    if n is not None and n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window on a CUDA device (no-op elsewhere)."""
    if device.type == "cuda":
        probe.cuda_reset_peak_memory(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak bytes allocated by torch on ``device`` since the last reset; None off CUDA."""
    return probe.cuda_peak_memory_bytes(device) if device.type == "cuda" else None


__all__ = ["DeviceError", "cpu_count", "cpu_threads", "cuda_device_count", "cuda_reason",
           "mps_available", "mps_reason", "peak_memory_bytes", "reset_peak_memory",
           "resolve_device"]
