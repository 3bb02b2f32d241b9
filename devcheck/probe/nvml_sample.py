"""Fast, repeated NVML readings for ``devcheck run`` / ``watch`` / ``gpus --watch``.

``probe/nvml.py`` answers "what GPUs are there" once (init, query, shutdown). A sampler
asks the same few questions four times a second for hours, so this module keeps NVML
initialised and the device handles open between readings, asks each GPU only what it
answered before (a field that said ``NotSupported`` once is not asked again), and turns
every failure into an :class:`NvmlEvent` instead of an exception: a GPU that falls off
the bus mid-run (``GpuIsLost``) is an event and a ``lost`` reading, never a crash.

What the fields mean (and do not) is documented in docs/run.md: ``utilization.gpu`` is the
share of the sample window in which *any* kernel ran, not SM occupancy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

from devcheck.facts import outside_text

# Errors after which a GPU answers nothing more (as probe/nvml.py classifies them).
_GPU_FATAL = ("NVMLError_GpuIsLost", "NVMLError_Unknown", "NVMLError_ResetRequired",
              "NVMLError_Uninitialized")
# "This GPU cannot tell you that": stop asking.
_UNSUPPORTED = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound",
                "NVMLError_NoPermission")
# nvmlClocksEventReason* bits -> names (gpu_idle is not a slowdown; the rest are).
THROTTLE_BITS = {
    0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
    0x100: "display_clock", 0x200: "board_limit", 0x400: "reliability",
}
NVML_CLOCK_SM = 1
NVML_TEMPERATURE_GPU = 0


@dataclass(frozen=True)
class GpuStatic:
    """What does not change during a run (read once at open)."""

    index: int  # NVML index (PCI bus order), not necessarily torch's
    name: str | None
    uuid: str | None
    memory_total_bytes: int | None
    power_limit_w: float | None


@dataclass(frozen=True)
class GpuProcReading:
    """One process holding a context on a GPU. ``sm_util_pct``/``mem_util_pct`` come from
    nvmlDeviceGetProcessUtilization (the process's share of the last second), None where
    the GPU does not report per-process utilisation or had no sample for it."""

    pid: int
    used_memory_bytes: int | None
    sm_util_pct: int | None = None
    mem_util_pct: int | None = None


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one instant; ``None`` = not available. ``processes`` is None when NVML
    could not list them (then "the job never used this GPU" cannot be concluded)."""

    index: int
    util_gpu_pct: int | None = None
    util_memory_pct: int | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_w: float | None = None
    temperature_c: int | None = None
    sm_clock_mhz: int | None = None
    throttle: tuple[str, ...] | None = None
    processes: tuple[GpuProcReading, ...] | None = None
    lost: bool = False


@dataclass(frozen=True)
class NvmlEvent:
    """Something that went wrong while sampling: ``kind`` is ``nvml_unavailable``,
    ``gpu_lost``, ``field_unsupported`` or ``field_error``."""

    kind: str
    message: str
    gpu: int | None = None
    field: str | None = None


def _import_pynvml() -> ModuleType:
    """The import seam: tests replace ``sys.modules['pynvml']`` with a scenario fake."""
    import pynvml

    return pynvml


def _describe(exc: BaseException) -> str:
    name, text = type(exc).__name__, str(exc) or repr(exc)
    return text if name in ("NVMLError", "Exception") else f"{name}: {text}"


def decode_throttle(mask: int) -> tuple[str, ...]:
    """A clocks-event bitmask as names, e.g. 0x24 -> ("sw_power_cap", "sw_thermal")."""
    return tuple(name for bit, name in THROTTLE_BITS.items() if mask & bit)


class _Lost(Exception):
    pass


class NvmlSampler:
    """An open NVML session: :meth:`open`, then :meth:`sample` repeatedly, then
    :meth:`close`. Not thread-safe; one sampler thread owns it."""

    def __init__(self, import_pynvml: Callable[[], ModuleType] | None = None) -> None:
        self._import = import_pynvml or _import_pynvml
        self._nv: ModuleType | None = None
        self.error: str | None = None
        self.gpus: tuple[GpuStatic, ...] = ()
        self._handles: list[Any] = []
        self._lost: set[int] = set()
        self._skip: set[tuple[int, str]] = set()  # (gpu, field) found unsupported
        self._last_error: dict[tuple[int, str], str] = {}
        self._proc_util_ts: dict[int, int] = {}

    @property
    def available(self) -> bool:
        return self._nv is not None

    def open(self) -> list[NvmlEvent]:
        """Initialise NVML and read each GPU's static facts; failures become events."""
        try:
            nv = self._import()
        except BaseException as exc:  # noqa: B036 - a binding's SystemExit is a fact too
            self.error = f"the pynvml module could not be imported: {_describe(exc)}"
            return [NvmlEvent("nvml_unavailable", f"NVML unavailable: {self.error}")]
        try:
            nv.nvmlInit()
        except Exception as exc:  # no driver, no permission: a fact
            self.error = _describe(exc)
            return [NvmlEvent("nvml_unavailable", f"NVML unavailable: {self.error}")]
        self._nv = nv
        events: list[NvmlEvent] = []
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception as exc:
            self.error = f"could not count GPUs: {_describe(exc)}"
            return [NvmlEvent("nvml_unavailable", self.error)]
        statics = []
        for i in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(i)
            except Exception as exc:
                handle = None
                self._lost.add(i)
                events.append(NvmlEvent("gpu_lost", f"GPU {i}: {_describe(exc)}", gpu=i))
            self._handles.append(handle)
            mem = self._get(events, i, "memory_total", lambda h: nv.nvmlDeviceGetMemoryInfo(h))
            limit = self._get(events, i, "power_limit",
                              lambda h: nv.nvmlDeviceGetEnforcedPowerLimit(h))
            statics.append(GpuStatic(
                index=i, name=outside_text(self._get(events, i, "name", nv.nvmlDeviceGetName)),
                uuid=outside_text(self._get(events, i, "uuid", nv.nvmlDeviceGetUUID)),
                memory_total_bytes=int(mem.total) if mem is not None else None,
                power_limit_w=limit / 1000.0 if limit is not None else None))
        self.gpus = tuple(statics)
        return events

    def _get(self, events: list[NvmlEvent], i: int, field: str,
             fn: Callable[[Any], Any]) -> Any:
        """One field of GPU ``i``; None when unsupported, lost or failing (with an event)."""
        if i in self._lost or (i, field) in self._skip:
            return None
        try:
            return fn(self._handles[i])
        except Exception as exc:
            name, text = type(exc).__name__, _describe(exc)
            if name in _GPU_FATAL:
                self._lost.add(i)
                events.append(NvmlEvent("gpu_lost", f"GPU {i} stopped answering ({text} on "
                                        f"{field}); it is no longer sampled", gpu=i,
                                        field=field))
                raise _Lost from exc
            if name in _UNSUPPORTED or isinstance(exc, (AttributeError, TypeError)):
                self._skip.add((i, field))
                events.append(NvmlEvent("field_unsupported", f"GPU {i}: {field} not "
                                        f"available ({text})", gpu=i, field=field))
                return None
            if self._last_error.get((i, field)) != text:  # one event per new error text
                self._last_error[(i, field)] = text
                events.append(NvmlEvent("field_error", f"GPU {i}: reading {field} failed: "
                                        f"{text}", gpu=i, field=field))
            return None

    def _throttle(self, events: list[NvmlEvent], i: int) -> tuple[str, ...] | None:
        nv = self._nv
        fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        if fn is None:
            return None
        mask = self._get(events, i, "throttle", fn)
        return decode_throttle(int(mask)) if mask is not None else None

    def _processes(self, events: list[NvmlEvent], i: int) -> tuple[GpuProcReading, ...] | None:
        nv = self._nv
        assert nv is not None
        procs = self._get(events, i, "processes", nv.nvmlDeviceGetComputeRunningProcesses)
        if procs is None:
            return None
        util: dict[int, Any] = {}
        get_util = getattr(nv, "nvmlDeviceGetProcessUtilization", None)
        if get_util is not None and (i, "process_utilization") not in self._skip:
            try:
                samples = get_util(self._handles[i], self._proc_util_ts.get(i, 0))
            except Exception as exc:
                if type(exc).__name__ == "NVMLError_NotFound":  # no sample in the window
                    samples = []
                else:
                    samples = self._get(events, i, "process_utilization",
                                        partial(_raise, exc)) or []
            for s in samples:
                self._proc_util_ts[i] = max(self._proc_util_ts.get(i, 0), int(s.timeStamp))
                util[int(s.pid)] = s  # later samples overwrite earlier ones
        out = []
        for p in procs:
            pid, used = int(p.pid), getattr(p, "usedGpuMemory", None)
            u = util.get(pid)
            out.append(GpuProcReading(
                pid=pid, used_memory_bytes=int(used) if used is not None else None,
                sm_util_pct=int(u.smUtil) if u is not None else None,
                mem_util_pct=int(u.memUtil) if u is not None else None))
        return tuple(out)

    def _read_gpu(self, events: list[NvmlEvent], i: int) -> GpuReading:
        nv = self._nv
        assert nv is not None
        if i in self._lost:
            return GpuReading(index=i, lost=True)
        try:
            util = self._get(events, i, "utilization", nv.nvmlDeviceGetUtilizationRates)
            mem = self._get(events, i, "memory", nv.nvmlDeviceGetMemoryInfo)
            power = self._get(events, i, "power", nv.nvmlDeviceGetPowerUsage)
            temp = self._get(events, i, "temperature",
                             lambda h: nv.nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU))
            clock = self._get(events, i, "sm_clock",
                              lambda h: nv.nvmlDeviceGetClockInfo(h, NVML_CLOCK_SM))
            throttle = self._throttle(events, i)
            processes = self._processes(events, i)
        except _Lost:
            return GpuReading(index=i, lost=True)
        return GpuReading(
            index=i,
            util_gpu_pct=int(util.gpu) if util is not None else None,
            util_memory_pct=int(util.memory) if util is not None else None,
            memory_used_bytes=int(mem.used) if mem is not None else None,
            memory_total_bytes=int(mem.total) if mem is not None else None,
            power_w=power / 1000.0 if power is not None else None,
            temperature_c=int(temp) if temp is not None else None,
            sm_clock_mhz=int(clock) if clock is not None else None,
            throttle=throttle, processes=processes)

    def sample(self) -> tuple[tuple[GpuReading, ...], list[NvmlEvent]]:
        """Read every GPU now. Never raises; a closed or unavailable session reads ()."""
        events: list[NvmlEvent] = []
        if self._nv is None:
            return (), events
        readings = []
        for i in range(len(self._handles)):
            try:
                readings.append(self._read_gpu(events, i))
            except Exception as exc:  # a binding bug must not end the job's sampling
                events.append(NvmlEvent("field_error", f"GPU {i}: {_describe(exc)}", gpu=i))
                readings.append(GpuReading(index=i))
        return tuple(readings), events

    def close(self) -> None:
        nv, self._nv = self._nv, None
        if nv is not None:
            try:
                nv.nvmlShutdown()
            except Exception:
                pass


def _raise(exc: BaseException, handle: Any = None) -> Any:
    """Re-raise ``exc`` through :meth:`NvmlSampler._get` so it is classified like others."""
    raise exc
