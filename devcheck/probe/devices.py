"""The device questions the pitfall lab and the pitfalls' preconditions ask, one seam each.

"Why can't torch use CUDA/MPS here?" has one answer in devcheck: the doctor's probes and
rules (:func:`availability`). The lab's child process and the pitfalls' preconditions
ask through the small wrappers below instead of calling ``torch.cuda`` themselves, so a
test fakes a machine with one ``monkeypatch`` (Lightning's ``num_cuda_devices()`` idea)
and the hardware boundary stays this package.

Two kinds of function live here:

- torch questions (``cuda_device_count``, ``in_bad_fork``, ...): they import torch, so
  only code that already runs with torch loaded (the lab's child) calls them;
- :func:`probe_machine`: cheap facts for ``devcheck pitfalls list`` and ``explain``, read
  from the installed files and the driver library, never importing torch or pynvml.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from devcheck.probe.libcuda import cuda_version_str, driver_cuda_version

if TYPE_CHECKING:
    from devcheck.facts import DeviceAvailability, DoctorFacts

__all__ = [
    "MachineFacts", "availability", "cuda_arch_list", "cuda_available", "cuda_build_version",
    "cuda_built", "cuda_capability", "cuda_device_count", "cuda_device_name",
    "cuda_initialized", "cuda_version_str", "driver_cuda_version", "hip_build_version",
    "in_bad_fork", "mps_available", "cheap_facts", "probe_machine", "wheel_cuda_version",
]


# ------------------------------------------------------------ torch's own answers (torch loaded)


def cuda_build_version() -> str | None:
    """The CUDA runtime this torch build bundles ("13.0"); None for a CPU-only or ROCm build."""
    import torch

    return torch.version.cuda


def hip_build_version() -> str | None:
    """The ROCm (HIP) version of a ROCm build of torch; None otherwise."""
    import torch

    return getattr(torch.version, "hip", None)


def wheel_cuda_version() -> int | None:
    """:func:`cuda_build_version` in the driver API's encoding (13000 for '13.0')."""
    version = cuda_build_version()
    if not version:
        return None
    major, minor = (int(p) for p in version.split(".")[:2])
    return major * 1000 + minor * 10


def cuda_built() -> bool:
    """Was this torch compiled with CUDA support (a GPU is not needed)?"""
    import torch

    return bool(torch.backends.cuda.is_built())


def cuda_available() -> bool:
    """``torch.cuda.is_available()``: starts the CUDA driver in this process (not torch's
    lazy init), so the lab's zygote never calls it; its children may."""
    import torch

    return bool(torch.cuda.is_available())


def cuda_device_count() -> int:
    """How many CUDA devices torch sees (after ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    return int(torch.cuda.device_count())


def cuda_peak_memory_bytes(device: object) -> int:
    """Peak bytes torch's allocator handed out on a CUDA ``device`` since the last reset."""
    import torch

    return int(torch.cuda.max_memory_allocated(device))  # type: ignore[arg-type]


def cuda_reset_peak_memory(device: object) -> None:
    """Start a new peak-memory window on a CUDA ``device``."""
    import torch

    torch.cuda.reset_peak_memory_stats(device)  # type: ignore[arg-type]


def cuda_device_name(index: int) -> str:
    """torch's name for its device ``index`` (e.g. "NVIDIA H100 80GB HBM3")."""
    import torch

    return str(torch.cuda.get_device_name(index))


def cuda_capability(index: int) -> tuple[int, int]:
    """Compute capability of torch's device ``index``, e.g. (9, 0)."""
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    return int(major), int(minor)


def cuda_arch_list() -> tuple[str, ...]:
    """The GPU architectures this build ships kernels for ("sm_80", "compute_90", ...)."""
    import torch

    return tuple(torch.cuda.get_arch_list())


def cuda_initialized() -> bool:
    """Has this process initialised CUDA (torch's lazy init)?"""
    import torch

    return bool(torch.cuda.is_initialized())


def in_bad_fork() -> bool:
    """Was this process forked from one that had initialised CUDA? (CUDA is unusable here.)"""
    import torch

    return bool(torch.cuda._is_in_bad_fork())


def mps_available() -> bool:
    """Can torch use Apple's MPS device in this process?"""
    import torch

    return bool(torch.backends.mps.is_available())


# ------------------------------------------------------------ why not: the doctor's answer

_CHEAP: list[DoctorFacts] = []  # host, NVML, wheel: probed once; the lab's zygote fills it


def cheap_facts() -> DoctorFacts:
    """The doctor's facts except torch's (host, NVML, the wheel), probed once and kept.

    The lab's zygote calls this before it forks, so every child inherits the answer; the
    NVML probe shuts NVML down again, so the children inherit no driver state.
    """
    if not _CHEAP:
        from devcheck.checkup import collect

        _CHEAP.append(collect(live=False, with_torch=False))
    return _CHEAP[0]


def availability() -> DeviceAvailability:
    """Which devices torch can use in this process and, where a kind is unusable, why.

    The doctor's own answer (its probes and rules, without the live check), so the lab
    skips a run for the very reason ``devcheck doctor`` and the pytest plugin give. Torch
    is asked in this process, so call it where torch is already loaded (the lab's child).
    """
    from devcheck.checkup import availability_from_facts
    from devcheck.probe import torchenv

    facts = replace(cheap_facts(), torch=torchenv.collect_torch(live=False))
    return availability_from_facts(facts)


# ------------------------------------------------------------ cheap facts, no torch import


@dataclass(frozen=True)
class MachineFacts:
    """What decides, before torch is loaded, whether a pitfall can be shown here."""

    torch_installed: bool
    cuda_build: str | None = None  # the wheel's CUDA runtime, "13.0"; None: CPU-only/ROCm
    driver_cuda_version: int | None = None  # the driver's newest CUDA, 13000; None: no driver
    mps_capable: bool = False  # macOS on Apple silicon
    fork: bool = True  # the fork start method exists (Linux, macOS)
    root: bool = False
    linux: bool = False

    @property
    def driver(self) -> bool:
        return self.driver_cuda_version is not None


def probe_machine() -> MachineFacts:
    """Facts for ``pitfalls list`` and ``explain``: the wheel's files (``probe_wheel``, no
    import) and the driver library (``libcuda``, no CUDA initialisation); never raises."""
    from devcheck.probe.wheel import probe_wheel

    wheel = probe_wheel()
    return MachineFacts(
        torch_installed=wheel.installed,
        cuda_build=wheel.cuda_version,
        driver_cuda_version=driver_cuda_version(),
        mps_capable=sys.platform == "darwin" and platform.machine() == "arm64",
        fork="fork" in multiprocessing.get_all_start_methods(),
        root=hasattr(os, "geteuid") and os.geteuid() == 0,
        linux=sys.platform.startswith("linux"),
    )
