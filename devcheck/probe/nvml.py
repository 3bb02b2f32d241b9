"""The NVML boundary: the one module that imports ``pynvml`` (nvidia-ml-py).

NVML is the driver's own management library, so it answers "is there a driver, which
version, which GPUs" in milliseconds, before (and without) torch. Two kinds of failure are
kept apart, as nvitop does: the library not loading is a fact about the machine
(``NvmlFacts.error``), while one field a GPU does not support is just ``None``. A GPU that
fails as a whole (``NVMLError_GpuIsLost``) is listed with its ``error`` so the report shows
it instead of silently dropping it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any, TypeVar

from devcheck.facts import GpuFacts, GpuProcess, NvmlFacts

T = TypeVar("T")

# NVML error class name -> NvmlFacts.error_kind, for the errors nvmlInit() can raise.
_INIT_ERROR_KINDS = {
    "NVMLError_LibraryNotFound": "library_not_found",
    "NVMLError_DriverNotLoaded": "driver_not_loaded",
    "NVMLError_NoPermission": "no_permission",
    "NVMLError_LibRmVersionMismatch": "driver_mismatch",
}
# Field-level errors that mean "this GPU cannot tell you that", not "the GPU is broken".
_FIELD_UNSUPPORTED = ("NVMLError_NotSupported", "NVMLError_NoData", "NVMLError_FunctionNotFound",
                      "NVMLError_NoPermission", "NVMLError_NotFound")
# Errors that make the whole GPU unusable.
_GPU_FATAL = ("NVMLError_GpuIsLost", "NVMLError_Unknown", "NVMLError_ResetRequired",
              "NVMLError_Uninitialized")


def _import_pynvml() -> ModuleType:
    """The import seam: tests replace ``sys.modules['pynvml']`` with a scenario fake."""
    import pynvml

    return pynvml


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    name = _error_name(exc)
    return text if name in ("NVMLError", "Exception") else f"{name}: {text}"


def _is_nvml_error(exc: BaseException, nv: ModuleType) -> bool:
    base = getattr(nv, "NVMLError", None)
    return isinstance(base, type) and isinstance(exc, base)


class _GpuLost(Exception):
    """Raised inside the per-GPU query when a field says the whole GPU is gone."""


def _field(nv: ModuleType, fn: Callable[[], T]) -> T | None:
    """One NVML field: unsupported -> None; GPU-fatal errors abort this GPU's query."""
    try:
        return fn()
    except Exception as exc:
        if _is_nvml_error(exc, nv) and _error_name(exc) in _GPU_FATAL:
            raise _GpuLost(_describe(exc)) from exc
        # NotSupported & co. (_FIELD_UNSUPPORTED), or a function an old binding lacks:
        # the field is unknown, the GPU and the report are fine.
        return None


def format_cuda_version(value: int | None) -> str | None:
    """NVML's integer CUDA version (13000, 12080) as "13.0", "12.8"."""
    if not value or value <= 0:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


def _processes(nv: ModuleType, handle: Any) -> tuple[GpuProcess, ...]:
    found: dict[int, GpuProcess] = {}
    for kind, getter in (("compute", "nvmlDeviceGetComputeRunningProcesses"),
                         ("graphics", "nvmlDeviceGetGraphicsRunningProcesses")):
        fn = getattr(nv, getter, None)
        if fn is None:
            continue
        procs = _field(nv, partial(fn, handle)) or []
        for proc in procs:
            pid = int(getattr(proc, "pid", -1))
            if pid in found or pid == os.getpid():  # devcheck's own CUDA context is no rival
                continue
            used = getattr(proc, "usedGpuMemory", None)  # None on WDDM / when NVML hides it
            name = None
            get_name = getattr(nv, "nvmlSystemGetProcessName", None)
            if get_name is not None:
                name = _text(_field(nv, partial(get_name, pid)))
            found[pid] = GpuProcess(pid=pid, name=name, kind=kind,
                                    used_memory_bytes=int(used) if used is not None else None)
    return tuple(found.values())


def _query_gpu(nv: ModuleType, index: int) -> GpuFacts:
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:
        return GpuFacts(index=index, error=_describe(exc))
    try:
        name = _text(_field(nv, lambda: nv.nvmlDeviceGetName(handle)))
        uuid = _text(_field(nv, lambda: nv.nvmlDeviceGetUUID(handle)))
        pci = _field(nv, lambda: nv.nvmlDeviceGetPciInfo(handle))
        cc = _field(nv, lambda: nv.nvmlDeviceGetCudaComputeCapability(handle))
        mem = _field(nv, lambda: nv.nvmlDeviceGetMemoryInfo(handle))
        util = _field(nv, lambda: nv.nvmlDeviceGetUtilizationRates(handle))
        temp = _field(nv, lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))
        power = _field(nv, lambda: nv.nvmlDeviceGetPowerUsage(handle))  # milliwatts
        limit = _field(nv, lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle))  # milliwatts
        processes = _processes(nv, handle)
    except _GpuLost as exc:
        return GpuFacts(index=index, error=str(exc))
    return GpuFacts(
        index=index,
        name=name,
        uuid=uuid,
        pci_bus_id=_text(getattr(pci, "busId", None)) if pci is not None else None,
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
        memory_total_bytes=int(mem.total) if mem is not None else None,
        memory_used_bytes=int(mem.used) if mem is not None else None,
        memory_free_bytes=int(mem.free) if mem is not None else None,
        utilization_gpu_pct=int(util.gpu) if util is not None else None,
        utilization_memory_pct=int(util.memory) if util is not None else None,
        temperature_c=int(temp) if temp is not None else None,
        power_draw_w=power / 1000.0 if power is not None else None,
        power_limit_w=limit / 1000.0 if limit is not None else None,
        processes=processes,
    )


def _collect(nv: ModuleType) -> NvmlFacts:
    try:
        nv.nvmlInit()
    except Exception as exc:
        kind = _INIT_ERROR_KINDS.get(_error_name(exc), "unknown")
        detail = _describe(exc)
        if kind == "library_not_found":
            lib = "nvml.dll" if sys.platform.startswith("win") else "libnvidia-ml.so.1"
            detail += f" ({lib} could not be loaded)"
        return NvmlFacts(available=False, error=detail, error_kind=kind)
    try:
        driver = _text(_field(nv, nv.nvmlSystemGetDriverVersion))
        cuda = _field(nv, nv.nvmlSystemGetCudaDriverVersion)
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception as exc:
            return NvmlFacts(available=True, error=f"could not count GPUs: {_describe(exc)}",
                             error_kind="unknown", driver_version=driver,
                             cuda_driver_version=format_cuda_version(cuda))
        gpus = tuple(_query_gpu(nv, i) for i in range(count))
        return NvmlFacts(available=True, driver_version=driver,
                         cuda_driver_version=format_cuda_version(cuda), gpus=gpus)
    except _GpuLost as exc:  # a system-wide query reported a fatal error
        return NvmlFacts(available=True, error=str(exc), error_kind="unknown")
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass


def _probe() -> NvmlFacts:
    try:
        nv = _import_pynvml()
    except Exception as exc:
        return NvmlFacts(available=False, error_kind="bindings_missing",
                         error=f"the pynvml module (nvidia-ml-py) could not be imported: "
                               f"{_describe(exc)}")
    try:
        return _collect(nv)
    except Exception as exc:  # a bug or an exotic binding: still a fact, never a crash
        return NvmlFacts(available=False, error_kind="unknown",
                         error=f"NVML query failed: {_describe(exc)}")


def probe_nvml(*, timeout_s: float = 5.0) -> NvmlFacts:
    """Ask NVML about the driver and every GPU; never raises.

    The query runs in a daemon thread so a wedged driver (NVML calls can block for minutes
    on a GPU falling off the bus) costs ``timeout_s``, not the report.
    """
    result: list[NvmlFacts] = []
    worker = threading.Thread(target=lambda: result.append(_probe()), name="devcheck-nvml",
                              daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not result:
        return NvmlFacts(available=False, error_kind="timeout",
                         error=f"NVML query timed out after {timeout_s:g}s (a hung driver call?)")
    return result[0]
