"""The NVML boundary: the one module that imports ``pynvml`` (nvidia-ml-py).

NVML is the driver's own management library, so it answers "is there a driver, which
version, which GPUs" in milliseconds, before (and without) torch. Failures are sorted by
what they mean, as nvitop does: the library not loading is a fact about the machine
(``NvmlFacts.error``); one field NVML cannot give is ``None`` with its reason kept in
``GpuFacts.errors``; a GPU that fails as a whole (``NVMLError_GpuIsLost``) is listed with its
``error``. Only NVML's own errors are absorbed per field: anything else is a devcheck or
binding bug, and surfaces (as ``NvmlFacts.error`` in the report, as a failure in tests).

The probe is synchronous; the caller bounds it (:mod:`devcheck.probe.deadline`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from devcheck.facts import GpuFacts, GpuProcess, NvmlFacts, outside_text
from devcheck.probe.deadline import Job, describe, run_job
from devcheck.probe.libcuda import cuda_version_str

T = TypeVar("T")

# NVML error class name -> NvmlFacts.error_kind, for the errors nvmlInit() can raise.
_INIT_ERROR_KINDS = {
    "NVMLError_LibraryNotFound": "library_not_found",
    "NVMLError_DriverNotLoaded": "driver_not_loaded",
    "NVMLError_NoPermission": "no_permission",
    "NVMLError_LibRmVersionMismatch": "driver_mismatch",
}
# Errors that make the whole GPU unusable. Any other NVML error on a field costs that field
# only (with its reason): NotSupported on a laptop GPU, NoPermission in a container,
# Uninitialized from a racing nvmlShutdown elsewhere in the process...
_GPU_FATAL = ("NVMLError_GpuIsLost", "NVMLError_Unknown", "NVMLError_ResetRequired")


def _import_pynvml() -> ModuleType:
    """The import seam: tests replace ``sys.modules['pynvml']`` with a scenario fake."""
    import pynvml

    return pynvml


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    name = type(exc).__name__
    return text if name in ("NVMLError", "Exception") else f"{name}: {text}"


def _is_nvml_error(exc: BaseException, nv: ModuleType) -> bool:
    base = getattr(nv, "NVMLError", None)
    return isinstance(base, type) and isinstance(exc, base)


class _GpuLost(Exception):
    """Raised inside the per-GPU query when a field says the whole GPU is gone."""

    def __init__(self, message: str, function: str) -> None:
        super().__init__(message)
        self.function = function  # the NVML call that failed


class _Fields:
    """Reads one GPU's fields, keeping the reason for each one that NVML could not give."""

    def __init__(self, nv: ModuleType) -> None:
        self.nv = nv
        self.errors: dict[str, str] = {}

    def get(self, name: str, function: str, *args: Any) -> Any:
        fn: Callable[..., Any] | None = getattr(self.nv, function, None)
        if fn is None:  # an old binding: the field is unknown, nothing is wrong
            self.errors[name] = f"{function} is not in this pynvml"
            return None
        try:
            return fn(*args)
        except Exception as exc:
            if not _is_nvml_error(exc, self.nv):
                raise  # devcheck's or the binding's bug: never hidden as "not supported"
            if type(exc).__name__ in _GPU_FATAL:
                raise _GpuLost(_describe(exc), function) from exc
            self.errors[name] = str(exc).strip() or type(exc).__name__
            return None


def format_cuda_version(value: int | None) -> str | None:
    """NVML's integer CUDA version (13000, 12080) as "13.0", "12.8"; None when unknown."""
    if not isinstance(value, int) or value <= 0:
        return None
    return cuda_version_str(value)


def _process(nv: ModuleType, f: _Fields, proc: Any, kind: str) -> GpuProcess:
    """One process record; raises (TypeError/ValueError) on a malformed one."""
    pid = int(proc.pid)
    used = getattr(proc, "usedGpuMemory", None)  # None on WDDM / when NVML hides it
    name = outside_text(f.get("process_name", "nvmlSystemGetProcessName", pid))
    return GpuProcess(pid=pid, name=name, kind=kind,
                      used_memory_bytes=int(used) if used is not None else None)


def _processes(nv: ModuleType, f: _Fields, handle: Any,
               ignore: frozenset[int]) -> tuple[GpuProcess, ...]:
    """Compute and graphics processes; a malformed record is skipped, not the GPU.

    ``ignore``: devcheck's own processes (this one, the torch probe's child), whose CUDA
    context is no rival.
    """
    found: dict[int, GpuProcess] = {}
    bad = 0
    for kind, getter in (("compute", "nvmlDeviceGetComputeRunningProcesses"),
                         ("graphics", "nvmlDeviceGetGraphicsRunningProcesses")):
        for proc in f.get(f"{kind}_processes", getter, handle) or []:
            try:
                record = _process(nv, f, proc, kind)
            except (AttributeError, TypeError, ValueError, OverflowError):
                bad += 1
                continue
            if record.pid in found or record.pid in ignore:
                continue
            found[record.pid] = record
    if bad:
        f.errors["processes"] = f"{bad} process record(s) could not be read"
    return tuple(found.values())


def _query_gpu(nv: ModuleType, index: int, ignore: frozenset[int]) -> GpuFacts:
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:
        if not _is_nvml_error(exc, nv):
            raise
        return GpuFacts(index=index, error=_describe(exc))
    f = _Fields(nv)
    try:
        name = outside_text(f.get("name", "nvmlDeviceGetName", handle))
        uuid = outside_text(f.get("uuid", "nvmlDeviceGetUUID", handle))
        pci = f.get("pci_bus_id", "nvmlDeviceGetPciInfo", handle)
        cc = f.get("compute_capability", "nvmlDeviceGetCudaComputeCapability", handle)
        mem = f.get("memory", "nvmlDeviceGetMemoryInfo", handle)
        util = f.get("utilization", "nvmlDeviceGetUtilizationRates", handle)
        temp = f.get("temperature_c", "nvmlDeviceGetTemperature", handle,
                     getattr(nv, "NVML_TEMPERATURE_GPU", 0))
        power = f.get("power_draw_w", "nvmlDeviceGetPowerUsage", handle)  # milliwatts
        limit = f.get("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", handle)  # milliwatts
        processes = _processes(nv, f, handle, ignore)
    except _GpuLost as exc:
        return GpuFacts(index=index, error=str(exc))
    return GpuFacts(
        index=index,
        name=name,
        uuid=uuid,
        pci_bus_id=outside_text(getattr(pci, "busId", None)) if pci is not None else None,
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
        errors=f.errors,
    )


def _collect(nv: ModuleType, ignore: frozenset[int]) -> NvmlFacts:
    try:
        nv.nvmlInit()
    except Exception as exc:
        kind = _INIT_ERROR_KINDS.get(type(exc).__name__, "unknown")
        detail = _describe(exc)
        if kind == "library_not_found":
            lib = "nvml.dll" if sys.platform.startswith("win") else "libnvidia-ml.so.1"
            detail += f" ({lib} could not be loaded)"
        return NvmlFacts(available=False, error=detail, error_kind=kind)
    try:
        system = _Fields(nv)
        driver = outside_text(system.get("driver_version", "nvmlSystemGetDriverVersion"))
        cuda = format_cuda_version(system.get("cuda_driver_version",
                                              "nvmlSystemGetCudaDriverVersion"))
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception as exc:
            if not _is_nvml_error(exc, nv):
                raise
            return NvmlFacts(available=True, error=f"could not count GPUs: {_describe(exc)}",
                             error_kind="unknown", driver_version=driver,
                             cuda_driver_version=cuda)
        gpus = tuple(_query_gpu(nv, i, ignore) for i in range(count))
        return NvmlFacts(available=True, driver_version=driver, cuda_driver_version=cuda,
                         gpus=gpus)
    except _GpuLost as exc:  # a system-wide query reported a fatal error: GPUs unknown
        return NvmlFacts(available=True, error=f"{exc.function}() failed: {exc}",
                         error_kind="unknown")
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: S110 - shutting down is best effort
            pass


def collect_nvml(ignore_pids: tuple[int, ...] = ()) -> NvmlFacts:
    """Ask NVML about the driver and every GPU, synchronously; never raises.

    ``ignore_pids``: processes of devcheck's own (besides this one) left out of the GPU's
    process list.

    A library whose import raises anything (``SystemExit`` and ``KeyboardInterrupt`` from a
    broken binding included) is reported as that exception; a bug past the import becomes
    ``error_kind="unknown"`` with the exception named.
    """
    try:
        nv = _import_pynvml()
    except BaseException as exc:  # noqa: B036 - a binding's SystemExit is a fact too
        return NvmlFacts(available=False, error_kind="bindings_missing",
                         error="the pynvml module (nvidia-ml-py) could not be imported: "
                               f"{describe(exc)}")
    try:
        return _collect(nv, frozenset((os.getpid(), *ignore_pids)))
    except Exception as exc:  # a bug or an exotic binding: still a fact, never a crash
        return NvmlFacts(available=False, error_kind="unknown",
                         error=f"NVML query failed: {describe(exc)}")


def nvml_timed_out(why: str) -> NvmlFacts:
    """The facts when the NVML query did not finish (hung driver) or died."""
    kind = "timeout" if "timed out" in why else "unknown"
    hint = " (a hung driver call?)" if kind == "timeout" else ""
    return NvmlFacts(available=False, error_kind=kind, error=why + hint)


def nvml_job(ignore_pids: tuple[int, ...] = ()) -> Job[NvmlFacts]:
    """:func:`collect_nvml` as a job for :mod:`devcheck.probe.deadline`."""
    return Job("NVML query", lambda: collect_nvml(ignore_pids), nvml_timed_out)


def probe_nvml(*, timeout_s: float | None = None) -> NvmlFacts:
    """:func:`collect_nvml`, bounded by ``timeout_s`` when given; never raises.

    NVML calls can block for minutes on a GPU falling off the bus; with a timeout, that
    costs ``timeout_s``, not the caller.
    """
    if timeout_s is None:
        return collect_nvml()
    return run_job(nvml_job(), timeout_s)
