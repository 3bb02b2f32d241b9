"""Hand-built facts for the rules, the renderers and the CLI (the torch side of the boundary).

Each builder returns what the real probe would return on such a machine, so a rule test
reads like a story: ``facts(nvml=nvml_gpus(cc="6.1"), torch=torch_cuda(1))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devcheck.facts import (
    DoctorFacts,
    GpuFacts,
    GpuProcess,
    HostFacts,
    LiveCheck,
    NvmlFacts,
    TorchDevice,
    TorchFacts,
    WheelFacts,
)
from devcheck.probe.deadline import Job

GiB = 1024**3
ARCH_CU130 = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")
NO_DRIVER_TEXT = ("Found no NVIDIA driver on your system. Please check that you have an NVIDIA "
                  "GPU and installed a driver from http://www.nvidia.com/Download/index.aspx")


def host(**kw: Any) -> HostFacts:
    base: dict[str, Any] = dict(
        os_name="Linux", os_release="6.8.0", machine="x86_64", python_version="3.11.7",
        cpu_physical=8, cpu_logical=16, cpu_usable=16, ram_total_bytes=64 * GiB,
        ram_available_bytes=60 * GiB, shm_total_bytes=32 * GiB, shm_free_bytes=32 * GiB,
        in_container=False, is_wsl=False, nvidia_pci_devices=0, env={})
    base.update(kw)
    return HostFacts(**base)


def gpu(index: int = 0, **kw: Any) -> GpuFacts:
    base: dict[str, Any] = dict(
        name="NVIDIA GeForce RTX 4090", uuid=f"GPU-{index:04d}", compute_capability="8.9",
        memory_total_bytes=24 * GiB, memory_used_bytes=1 * GiB, memory_free_bytes=23 * GiB,
        utilization_gpu_pct=2, utilization_memory_pct=1, temperature_c=40,
        power_draw_w=30.0, power_limit_w=450.0)
    base.update(kw)
    return GpuFacts(index=index, **base)


def nvml_gpus(n: int = 1, *, cuda: str = "13.0", driver: str = "580.65.06",
              **gpu_kw: Any) -> NvmlFacts:
    return NvmlFacts(available=True, driver_version=driver, cuda_driver_version=cuda,
                     gpus=tuple(gpu(i, **gpu_kw) for i in range(n)))


def nvml_missing() -> NvmlFacts:
    return NvmlFacts(available=False, error_kind="library_not_found",
                     error="NVMLError_LibraryNotFound: NVML Shared Library Not Found "
                           "(libnvidia-ml.so.1 could not be loaded)")


def wheel(cuda: str | None = "13.0", version: str = "2.14.1+cu130") -> WheelFacts:
    return WheelFacts(installed=True, version=version, cuda_version=cuda,
                      cpu_only=cuda is None, location="/venv/site-packages/torch")


def torch_cpu_machine(cuda: str | None = "13.0", version: str = "2.14.1+cu130",
                      reason: str | None = NO_DRIVER_TEXT) -> TorchFacts:
    """A CUDA (or CPU-only, ``cuda=None``) wheel on a machine where CUDA is unusable."""
    return TorchFacts(imported=True, version=version, cuda_version=cuda,
                      arch_list=ARCH_CU130 if cuda else (), cuda_available=False,
                      cuda_unavailable_reason=reason if cuda else None, default_device="cpu",
                      live_checks=(LiveCheck("cpu", True, 0.001, 1e-6),))


def torch_cuda(n: int = 1, *, ok: bool = True, capability: str = "8.9",
               error: str | None = None, **kw: Any) -> TorchFacts:
    """torch sees ``n`` CUDA devices; their live checks pass (or fail with ``error``)."""
    checks = [LiveCheck("cpu", True, 0.001, 1e-6)] + [
        LiveCheck(f"cuda:{i}", ok, 0.002, 1e-6 if ok else None,
                  None if ok else (error or "CUDA error: unspecified launch failure"))
        for i in range(n)]
    base: dict[str, Any] = dict(
        imported=True, version="2.14.1+cu130", cuda_version="13.0", cudnn_version=92400,
        arch_list=ARCH_CU130, cuda_available=True, device_count=n,
        devices=tuple(TorchDevice(i, "NVIDIA GeForce RTX 4090", capability, 24 * GiB)
                      for i in range(n)),
        default_device="cpu", live_checks=tuple(checks))
    base.update(kw)
    return TorchFacts(**base)


def torch_import_failed(error: str = "ImportError: libcudnn.so.9: cannot open shared object "
                                     "file: No such file or directory") -> TorchFacts:
    return TorchFacts(imported=False, import_error=error)


def torch_timed_out(seconds: float = 30) -> TorchFacts:
    return TorchFacts(error=f"torch probe timed out after {seconds:g}s while importing torch")


def facts(*, host_facts: HostFacts | None = None, nvml: NvmlFacts | None = None,
          wheel_facts: WheelFacts | None = None,
          torch: TorchFacts | None = None, no_torch: bool = False) -> DoctorFacts:
    t = None if no_torch else (torch if torch is not None else torch_cpu_machine())
    w = wheel_facts if wheel_facts is not None else wheel(
        t.cuda_version if t is not None and t.imported else "13.0",
        t.version if t is not None and t.imported and t.version else "2.14.1+cu130")
    return DoctorFacts(host=host_facts or host(), nvml=nvml or nvml_missing(), wheel=w, torch=t)


def process(pid: int, mib: int | None) -> GpuProcess:
    return GpuProcess(pid=pid, name=f"python{pid}",
                      used_memory_bytes=None if mib is None else mib * 1024**2)


def torch_job(result: TorchFacts | Callable[[], TorchFacts]) -> Callable[..., Job[TorchFacts]]:
    """A stand-in for ``torchproc.torch_job``: the doctor gets ``result`` (or calls it)."""
    fn = result if callable(result) else (lambda: result)

    def make(**kw: Any) -> Job[TorchFacts]:
        return Job("torch probe", fn, lambda why: TorchFacts(error=why))

    return make


def use_torch(monkeypatch: Any, result: TorchFacts | Callable[[], TorchFacts]) -> None:
    """Make the doctor's torch probe answer ``result`` (no child process, no torch)."""
    from devcheck.probe import torchproc

    monkeypatch.setattr(torchproc, "torch_job", torch_job(result))
