"""What the preflight of ``devcheck dist`` reads without launching anything.

GPU-to-GPU topology through NVML (``nvidia-smi topo -m``'s common ancestor, P2P read
status, NVLinks between each pair, PCIe generation and width), the NCCL version of the
library torch will load (asked through ``ncclGetVersion``, without importing torch),
``/dev/shm``, the kernel command line (IOMMU/ACS hints), the IOMMU groups, and the
variables that change how NCCL and gloo behave. Never raises: each part that fails leaves
``None`` and, where it matters, a ``*_error`` saying why. Like probe/nvml.py, the NVML part
runs in a daemon thread so a wedged driver costs ``timeout_s``, not the command.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from devcheck.dist.bandwidth import expected_link_gbps
from devcheck.dist.model import GpuLink, TopologyFacts

# nvmlGpuTopologyLevel_t -> nvidia-smi topo's words
ANCESTOR = {0: "INTERNAL", 10: "SINGLE", 20: "MULTIPLE", 30: "HOSTBRIDGE", 40: "NODE",
            50: "SYSTEM"}
# nvmlGpuP2PStatus_t
P2P_STATUS = {0: "ok", 1: "chipset not supported", 2: "GPU not supported",
              3: "IOH topology not supported", 4: "disabled by regkey", 5: "not supported",
              6: "unknown"}
P2P_CAPS_INDEX_READ = 0
NVLINK_MAX_LINKS = 18
_ENV_PREFIXES = ("NCCL_", "TORCH_NCCL_", "GLOO_", "TORCH_DISTRIBUTED_")
_ENV_NAMES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
              "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


def _import_pynvml() -> ModuleType:
    """The import seam: tests put a fake in ``sys.modules['pynvml']``."""
    import pynvml

    return pynvml


def _call(fn: Any, *args: Any) -> Any:
    """One NVML field: any error (NotSupported, NoPermission, ...) means "not known"."""
    try:
        return fn(*args)
    except Exception:
        return None


def _bus_id(nv: ModuleType, handle: Any) -> str | None:
    info = _call(nv.nvmlDeviceGetPciInfo, handle)
    bus = getattr(info, "busId", None)
    if isinstance(bus, bytes):
        bus = bus.decode("ascii", "replace")
    return bus.lower().lstrip("0") if isinstance(bus, str) else None


def _nvlink_peers(nv: ModuleType, handle: Any) -> list[str]:
    """The PCI bus id at the far end of each active NVLink ("switch" ids included)."""
    peers = []
    for link in range(NVLINK_MAX_LINKS):
        if _call(nv.nvmlDeviceGetNvLinkState, handle, link) != 1:
            continue
        info = _call(nv.nvmlDeviceGetNvLinkRemotePciInfo_v2, handle, link)
        bus = getattr(info, "busId", None)
        if isinstance(bus, bytes):
            bus = bus.decode("ascii", "replace")
        peers.append(bus.lower().lstrip("0") if isinstance(bus, str) else "?")
    return peers


def _nvlinks_between(peers_a: list[str], peers_b: list[str], bus_a: str | None,
                     bus_b: str | None, gpu_buses: set[str]) -> int:
    direct = sum(1 for p in peers_a if bus_b is not None and p == bus_b)
    if direct:
        return direct
    # Through NVSwitches: the far end is a switch, not a GPU; both reach the fabric.
    via_a = sum(1 for p in peers_a if p not in gpu_buses)
    via_b = sum(1 for p in peers_b if p not in gpu_buses)
    return min(via_a, via_b)


def _topology(nv: ModuleType) -> dict[str, Any]:
    nv.nvmlInit()
    try:
        count = int(nv.nvmlDeviceGetCount())
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        names = []
        for h in handles:
            name = _call(nv.nvmlDeviceGetName, h)
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        buses = [_bus_id(nv, h) for h in handles]
        peers = [_nvlink_peers(nv, h) for h in handles]
        gens = [_call(nv.nvmlDeviceGetMaxPcieLinkGeneration, h) for h in handles]
        widths = [_call(nv.nvmlDeviceGetMaxPcieLinkWidth, h) for h in handles]
        gen = min((g for g in gens if isinstance(g, int)), default=None)
        width = min((w for w in widths if isinstance(w, int)), default=None)
        version = (_call(nv.nvmlDeviceGetNvLinkVersion, handles[0], 0)
                   if handles and peers[0] else None)
        links = []
        gpu_buses = {b for b in buses if b}
        for i in range(count):
            for j in range(i + 1, count):
                level = _call(nv.nvmlDeviceGetTopologyCommonAncestor, handles[i], handles[j])
                p2p = _call(nv.nvmlDeviceGetP2PStatus, handles[i], handles[j],
                            P2P_CAPS_INDEX_READ)
                n = _nvlinks_between(peers[i], peers[j], buses[i], buses[j], gpu_buses)
                ancestor = ANCESTOR.get(level) if isinstance(level, int) else None
                links.append(GpuLink(
                    i, j, ancestor, P2P_STATUS.get(p2p) if isinstance(p2p, int) else None, n,
                    expected_link_gbps(ancestor, n, version, gen, width)))
        return {"gpu_count": count, "gpu_names": tuple(names), "links": tuple(links),
                "nvlink_version": version, "pcie_gen": gen, "pcie_width": width}
    finally:
        _call(nv.nvmlShutdown)


def _nvml_part(timeout_s: float) -> dict[str, Any]:
    box: list[dict[str, Any]] = []

    def work() -> None:
        try:
            box.append(_topology(_import_pynvml()))
        except Exception as exc:  # no library, no driver: a fact, not a crash
            box.append({"nvml_error": f"{type(exc).__name__}: {exc}"})

    t = threading.Thread(target=work, name="devcheck-topology", daemon=True)
    t.start()
    t.join(timeout_s)
    return box[0] if box else {"nvml_error": f"NVML timed out after {timeout_s:g} s"}


def find_libnccl(paths: list[str] | None = None) -> Path | None:
    """The libnccl.so.2 of the nvidia-nccl wheel torch loads, or None (statically linked)."""
    for base in paths if paths is not None else sys.path:
        candidate = Path(base) / "nvidia" / "nccl" / "lib" / "libnccl.so.2"
        if candidate.is_file():
            return candidate
    return None


def nccl_version(lib: Path | None = None) -> tuple[str | None, str | None]:
    """(version, None) or (None, why). ncclGetVersion: major*10000 + minor*100 + patch."""
    path = lib or find_libnccl()
    if path is None:
        return None, ("libnccl.so.2 not found next to torch (no nvidia-nccl wheel: a "
                      "CPU-only torch, or NCCL linked into torch; the ranks report it)")
    try:
        code = ctypes.c_int()
        if ctypes.CDLL(str(path)).ncclGetVersion(ctypes.byref(code)) != 0:
            return None, f"ncclGetVersion failed in {path}"
    except (OSError, AttributeError) as exc:
        return None, f"cannot load {path}: {exc}"
    v = code.value
    major, minor, patch = (v // 10000, v % 10000 // 100, v % 100) if v >= 10000 else \
        (v // 1000, v % 1000 // 100, v % 100)
    return f"{major}.{minor}.{patch}", None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def interesting_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(env.items())
            if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)}


def probe_topology(*, timeout_s: float = 5.0, env: dict[str, str] | None = None,
                   root: Path = Path("/"), with_nccl: bool = True) -> TopologyFacts:
    """Everything the preflight needs; never raises. ``root`` lets tests fake /proc, /sys."""
    part = _nvml_part(timeout_s)
    version, why = nccl_version() if with_nccl else (None, "not asked")
    shm = None
    try:
        st = os.statvfs(root / "dev" / "shm")
        shm = st.f_blocks * st.f_frsize
    except OSError:
        pass
    groups_dir = root / "sys" / "kernel" / "iommu_groups"
    try:
        groups: int | None = sum(1 for _ in groups_dir.iterdir())
    except OSError:
        groups = None
    try:
        interfaces = tuple(sorted(name for _, name in socket.if_nameindex()))
    except OSError:
        interfaces = ()
    try:
        cpus: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count()
    return TopologyFacts(
        **part, net_interfaces=interfaces, cpu_usable=cpus, nccl_version=version, nccl_error=why,
        shm_total_bytes=shm,
        kernel_cmdline=_read(root / "proc" / "cmdline"), iommu_groups=groups,
        env=interesting_env(dict(os.environ) if env is None else env))
