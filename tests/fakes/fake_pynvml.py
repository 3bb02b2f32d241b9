"""A scenario-driven stand-in for the ``pynvml`` module (nvidia-ml-py).

Like gpustat's tests, the fake mirrors the real binding's shape: an ``NVMLError`` base class
carrying ``value`` and one subclass per error code (``NVMLError_LibraryNotFound``,
``NVMLError_NotSupported``, ``NVMLError_GpuIsLost``...), the real function names, milliwatt
power readings, an integer CUDA driver version (13000 = 13.0) and process records whose
``usedGpuMemory`` may be None. Install it with :func:`install` (``sys.modules['pynvml']``).
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

# error name -> NVML return code, as in nvml.h
ERROR_CODES = {
    "NVMLError_Uninitialized": 1, "NVMLError_InvalidArgument": 2, "NVMLError_NotSupported": 3,
    "NVMLError_NoPermission": 4, "NVMLError_NotFound": 6, "NVMLError_DriverNotLoaded": 9,
    "NVMLError_Timeout": 10, "NVMLError_LibraryNotFound": 12, "NVMLError_FunctionNotFound": 13,
    "NVMLError_GpuIsLost": 15, "NVMLError_ResetRequired": 16,
    "NVMLError_LibRmVersionMismatch": 18, "NVMLError_NoData": 20, "NVMLError_Unknown": 999,
}
MiB = 1024**2


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {v: k for k, v in ERROR_CODES.items()}.get(self.value, "Unknown Error") \
            .removeprefix("NVMLError_")


def _error_class(name: str, code: int) -> type[NVMLError]:
    def init(self: NVMLError) -> None:
        NVMLError.__init__(self, code)

    return type(name, (NVMLError,), {"__init__": init})


ERRORS: dict[str, type[NVMLError]] = {
    name: _error_class(name, code) for name, code in ERROR_CODES.items()}


@dataclass
class FakeProcess:
    pid: int
    usedGpuMemory: int | None  # noqa: N815 - the binding's own spelling


@dataclass
class FakeProcessUtil:
    """One c_nvmlProcessUtilizationSample_t (nvmlDeviceGetProcessUtilization)."""

    pid: int
    timeStamp: int  # noqa: N815 - microseconds, the binding's own spelling
    smUtil: int  # noqa: N815
    memUtil: int = 0  # noqa: N815


@dataclass
class FakeGpu:
    name: str = "NVIDIA GeForce RTX 4090"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    cc: tuple[int, int] = (8, 9)
    memory_total: int = 24564 * MiB
    memory_used: int = 1024 * MiB
    util_gpu: int = 3
    util_memory: int = 1
    temperature: int = 41
    power_mw: int = 35_000
    power_limit_mw: int = 450_000
    processes: list[FakeProcess] = field(default_factory=list)
    failing: dict[str, str] = field(default_factory=dict)  # function name -> error name
    lost: str | None = None  # every per-GPU call raises this error
    # for devcheck run/watch's sampler (probe/nvml_sample.py):
    sm_clock_mhz: int = 2520
    throttle_mask: int = 0  # nvmlClocksEventReason* bits
    process_util: list[FakeProcessUtil] = field(default_factory=list)


@dataclass
class Scenario:
    gpus: list[FakeGpu] = field(default_factory=list)
    driver_version: str | bytes = "580.65.06"
    cuda_version: int = 13000
    init_error: str | None = None  # raised by nvmlInit
    hang_s: float = 0.0  # nvmlInit sleeps this long (a wedged driver)
    calls: list[str] = field(default_factory=list)


def build_module(sc: Scenario) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    for name, cls in ERRORS.items():
        setattr(mod, name, cls)
    mod.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]

    def fn(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(impl: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                sc.calls.append(name)
                if args and isinstance(args[0], FakeGpu):
                    gpu = args[0]
                    if gpu.lost:
                        raise ERRORS[gpu.lost]()
                    if name in gpu.failing:
                        raise ERRORS[gpu.failing[name]]()
                return impl(*args)
            setattr(mod, name, call)
            return call
        return wrap

    @fn("nvmlInit")
    def _init() -> None:
        if sc.hang_s:
            time.sleep(sc.hang_s)
        if sc.init_error:
            raise ERRORS[sc.init_error]()

    fn("nvmlShutdown")(lambda: None)
    fn("nvmlSystemGetDriverVersion")(lambda: sc.driver_version)
    fn("nvmlSystemGetCudaDriverVersion")(lambda: sc.cuda_version)
    fn("nvmlDeviceGetCount")(lambda: len(sc.gpus))
    fn("nvmlDeviceGetHandleByIndex")(lambda i: sc.gpus[i])
    fn("nvmlDeviceGetName")(lambda g: g.name)
    fn("nvmlDeviceGetUUID")(lambda g: g.uuid)
    fn("nvmlDeviceGetPciInfo")(lambda g: types.SimpleNamespace(busId=f"00000000:0{g.cc[0]}:00.0"))
    fn("nvmlDeviceGetCudaComputeCapability")(lambda g: g.cc)
    fn("nvmlDeviceGetMemoryInfo")(lambda g: types.SimpleNamespace(
        total=g.memory_total, used=g.memory_used, free=g.memory_total - g.memory_used))
    fn("nvmlDeviceGetUtilizationRates")(lambda g: types.SimpleNamespace(
        gpu=g.util_gpu, memory=g.util_memory))
    fn("nvmlDeviceGetTemperature")(lambda g, sensor: g.temperature)
    fn("nvmlDeviceGetPowerUsage")(lambda g: g.power_mw)
    fn("nvmlDeviceGetEnforcedPowerLimit")(lambda g: g.power_limit_mw)
    fn("nvmlDeviceGetComputeRunningProcesses")(lambda g: list(g.processes))
    fn("nvmlDeviceGetGraphicsRunningProcesses")(lambda g: [])
    fn("nvmlSystemGetProcessName")(lambda pid: f"python{pid}".encode())
    fn("nvmlDeviceGetClockInfo")(lambda g, clock: g.sm_clock_mhz)
    fn("nvmlDeviceGetCurrentClocksEventReasons")(lambda g: g.throttle_mask)

    @fn("nvmlDeviceGetProcessUtilization")
    def _process_util(g: FakeGpu, since: int) -> list[FakeProcessUtil]:
        samples = [u for u in g.process_util if u.timeStamp > since]
        if not samples:
            raise ERRORS["NVMLError_NotFound"]()  # the real call's "no sample since then"
        return samples
    return mod


def install(monkeypatch: pytest.MonkeyPatch, sc: Scenario) -> Scenario:
    """Make ``import pynvml`` return the fake for this test."""
    monkeypatch.setitem(sys.modules, "pynvml", build_module(sc))
    return sc


def uninstallable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import pynvml`` raises ImportError (nvidia-ml-py not installed)."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


# --- scenario builders -------------------------------------------------------------------

def no_gpus() -> Scenario:
    return Scenario(gpus=[])


def one_gpu(**kw: Any) -> Scenario:
    return Scenario(gpus=[FakeGpu(**kw)])


def two_gpus() -> Scenario:
    return Scenario(gpus=[
        FakeGpu(name="NVIDIA H100 80GB HBM3", uuid="GPU-aaaa", cc=(9, 0),
                memory_total=81559 * MiB, power_limit_mw=700_000),
        FakeGpu(name="NVIDIA H100 80GB HBM3", uuid="GPU-bbbb", cc=(9, 0),
                memory_total=81559 * MiB, memory_used=80000 * MiB, util_gpu=100,
                processes=[FakeProcess(4242, 79000 * MiB), FakeProcess(4243, None)]),
    ])


def library_missing() -> Scenario:
    return Scenario(init_error="NVMLError_LibraryNotFound")


def driver_not_loaded() -> Scenario:
    return Scenario(init_error="NVMLError_DriverNotLoaded")


def not_supported_fields() -> Scenario:
    """A GPU (e.g. a laptop or a vGPU) that refuses power, temperature and utilization."""
    unsupported = {f: "NVMLError_NotSupported" for f in (
        "nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetTemperature", "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetComputeRunningProcesses")}
    return Scenario(gpus=[FakeGpu(failing=unsupported)])


def lost_gpu(error: str = "NVMLError_GpuIsLost") -> Scenario:
    return Scenario(gpus=[FakeGpu(uuid="GPU-good"), FakeGpu(uuid="GPU-lost", lost=error)])


def old_driver() -> Scenario:
    """A driver from the CUDA 12.4 era (550.x) facing a CUDA 13.0 wheel."""
    return Scenario(gpus=[FakeGpu()], driver_version=b"550.54.15", cuda_version=12040)


def hung_driver(seconds: float = 5.0) -> Scenario:
    return Scenario(hang_s=seconds)


def broken_on_import(monkeypatch: pytest.MonkeyPatch, folder: Any, statement: str) -> None:
    """A real ``pynvml.py`` in ``folder`` whose import runs ``statement`` (e.g. raises)."""
    from pathlib import Path

    Path(folder, "pynvml.py").write_text(statement + "\n", encoding="utf-8")
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.syspath_prepend(str(folder))


class MalformedProcess:
    """A process record whose pid is not a number (a binding/driver mismatch)."""

    pid = "not-a-pid"
    usedGpuMemory = 5  # noqa: N815 - the binding's own spelling
