"""The host probe: OS, Python, CPUs, memory, /dev/shm, container/WSL, relevant variables.

These facts explain device problems that are not the GPU's fault: DataLoader workers
crashing on a 64 MB Docker /dev/shm, ``num_workers`` set above the CPUs a container may
use, or a ``CUDA_VISIBLE_DEVICES`` that hides the GPU. Each sub-probe is isolated: one
that fails adds a line to ``HostFacts.errors`` and leaves its fields ``None``.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcheck.facts import HostFacts

# Variables that change which devices torch sees or how it uses them.
RELEVANT_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "PYTORCH_CUDA_ALLOC_CONF",
    "CUDA_LAUNCH_BLOCKING",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "PYTORCH_ENABLE_MPS_FALLBACK",
)


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2/v1 quota (``docker --cpus``), or None when unlimited."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def _linux_physical_cpus() -> int | None:
    """Distinct (package, core) pairs in /proc/cpuinfo; None where the file says nothing."""
    cores: set[tuple[str, str]] = set()
    package = core = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            package = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip() and core:
            cores.add((package, core))
            package = core = ""
    if core:
        cores.add((package, core))
    return len(cores) or None


def _cpus() -> dict[str, Any]:
    # /proc on Linux: psutil's import alone costs ~10 ms of the doctor's tight budget.
    if sys.platform.startswith("linux"):
        logical: int | None = os.cpu_count()
        physical = _linux_physical_cpus()
    else:
        import psutil

        logical, physical = psutil.cpu_count(logical=True), psutil.cpu_count(logical=False)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    limit = _cgroup_cpu_limit()
    if limit is not None and usable is not None:
        usable = max(1, min(usable, int(limit)))
    return {"cpu_physical": physical, "cpu_logical": logical, "cpu_usable": usable}


def _memory() -> dict[str, Any]:
    if sys.platform.startswith("linux"):
        info = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            parts = value.split()
            if parts and parts[0].isdigit():
                info[key] = int(parts[0]) * 1024  # kB
        if "MemTotal" in info and "MemAvailable" in info:
            return {"ram_total_bytes": info["MemTotal"],
                    "ram_available_bytes": info["MemAvailable"]}
    import psutil

    vm = psutil.virtual_memory()
    return {"ram_total_bytes": int(vm.total), "ram_available_bytes": int(vm.available)}


def _shm() -> dict[str, Any]:
    if not os.path.isdir("/dev/shm"):
        return {}
    st = os.statvfs("/dev/shm")
    return {"shm_total_bytes": st.f_blocks * st.f_frsize,
            "shm_free_bytes": st.f_bavail * st.f_frsize}


def _container() -> dict[str, Any]:
    kind = None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kind = "kubernetes"
    elif os.path.exists("/.dockerenv"):
        kind = "docker"
    elif os.path.exists("/run/.containerenv"):
        kind = "podman"
    else:
        try:
            cgroup = Path("/proc/1/cgroup").read_text()
        except OSError:
            cgroup = ""
        for marker in ("docker", "kubepods", "containerd", "libpod", "lxc"):
            if marker in cgroup:
                kind = {"kubepods": "kubernetes", "libpod": "podman"}.get(marker, marker)
                break
    if kind is None and sys.platform.startswith("linux"):
        return {"in_container": False}
    return {"in_container": kind is not None, "container_kind": kind}


def _wsl() -> dict[str, Any]:
    release = platform.release().lower()
    return {"is_wsl": "microsoft" in release or "wsl" in release}


PCI_ROOT = Path("/sys/bus/pci/devices")
NVIDIA_VENDOR = "0x10de"


def _nvidia_pci(root: Path | None = None) -> dict[str, Any]:
    """Count NVIDIA display/3D controllers (class 0x03xxxx) visible in sysfs."""
    root = PCI_ROOT if root is None else root
    if not root.is_dir():
        return {}
    count = 0
    for dev in root.iterdir():
        try:
            vendor = (dev / "vendor").read_text().strip().lower()
            klass = (dev / "class").read_text().strip().lower()
        except OSError:
            continue
        if vendor == NVIDIA_VENDOR and klass.startswith("0x03"):
            count += 1
    return {"nvidia_pci_devices": count}


def probe_host() -> HostFacts:
    """Gather the host facts; never raises (a failing sub-probe is named in ``errors``)."""
    values: dict[str, Any] = {
        "os_name": platform.system() or None,
        "os_release": platform.release() or None,
        "platform": platform.platform(),
        "machine": platform.machine() or None,
        "python_version": platform.python_version(),
        "python_executable": sys.executable or None,
        "env": {k: os.environ[k] for k in RELEVANT_ENV if k in os.environ},
    }
    errors: list[str] = []
    subprobes: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = (
        ("cpus", _cpus), ("memory", _memory), ("/dev/shm", _shm),
        ("container", _container), ("wsl", _wsl),
        ("pci", _nvidia_pci),
    )
    for name, probe in subprobes:
        try:
            values.update(probe())
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return HostFacts(errors=tuple(errors), **values)
