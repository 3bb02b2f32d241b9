"""Collect every fact, concurrently, and summarise which devices torch can really use.

``import torch`` dominates the doctor's wall time (seconds), so the cheap probes (host,
NVML, the wheel's files) run in threads while torch imports, and torch is imported once,
in-process: no subprocess re-imports it. Each probe has its own timeout; a hung probe
becomes a fact saying so and the report still renders.

Probes are looked up as module attributes at call time (``nvml.probe_nvml``), so tests and
the pytest plugin can monkeypatch them with hand-built facts.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from devcheck.facts import (
    DeviceAvailability,
    DoctorFacts,
    Finding,
    HostFacts,
    NvmlFacts,
    TorchFacts,
    WheelFacts,
)
from devcheck.probe import host, nvml, torchenv, wheel

T = TypeVar("T")
HOST_TIMEOUT_S = 5.0
WHEEL_TIMEOUT_S = 5.0
NVML_TIMEOUT_S = 5.0

# Findings whose title explains why CUDA is unusable, most specific first.
_CUDA_REASON_IDS = (
    "torch_not_installed", "torch_import_failed", "torch_probe_failed", "cpu_only_wheel",
    "driver_too_old", "driver_library_mismatch", "nvml_timeout", "gpu_arch_not_in_wheel",
    "cuda_visible_devices", "no_driver", "no_gpu", "torch_cannot_use_gpu", "gpu_lost",
    "live_check_failed",
)
# The same for MPS: torch itself broken, or the MPS rules (macOS only).
_MPS_REASON_IDS = ("torch_not_installed", "torch_import_failed", "torch_probe_failed",
                   "mps_not_built", "mps_unavailable")


def _in_thread(name: str, fn: Callable[[], T], timeout_s: float,
               on_fail: Callable[[str], T]) -> Callable[[], T]:
    """Start ``fn`` in a daemon thread now; the returned callable waits for its result.

    Daemon threads, because a hung driver call cannot be cancelled: it must not keep the
    process alive after the report is printed.
    """
    result: list[T] = []
    failure: list[str] = []

    def work() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # probes never raise; this guards against their bugs
            failure.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=work, name=f"devcheck-{name}", daemon=True)
    started = time.monotonic()
    worker.start()

    def wait() -> T:
        worker.join(max(0.0, timeout_s - (time.monotonic() - started)))
        if result:
            return result[0]
        return on_fail(failure[0] if failure else f"timed out after {timeout_s:g}s")

    return wait


def collect(*, live: bool = True, timeout_s: float = 30.0, with_torch: bool = True) -> DoctorFacts:
    """Run all probes (torch only when ``with_torch``); never raises.

    ``timeout_s`` bounds the torch probe (import + live check); the cheap probes get
    ``min(timeout_s, 5)`` each.
    """
    small = min(timeout_s, NVML_TIMEOUT_S)
    wait_torch = None
    if with_torch:  # first: importing torch is the long pole, the others hide behind it
        wait_torch = _in_thread(
            "torch", lambda: torchenv.probe_torch(live=live, timeout_s=timeout_s),
            timeout_s + 1.0, lambda why: TorchFacts(error=f"torch probe failed: {why}"))
    wait_host = _in_thread("host", host.probe_host, small,
                           lambda why: HostFacts(errors=(f"host probe failed: {why}",)))
    wait_wheel = _in_thread("wheel", wheel.probe_wheel, small,
                            lambda why: WheelFacts(error=f"wheel probe failed: {why}"))
    wait_nvml = _in_thread("nvml", lambda: nvml.probe_nvml(timeout_s=small), small + 1.0,
                           lambda why: NvmlFacts(error=f"NVML probe failed: {why}",
                                                 error_kind="timeout" if "timed out" in why
                                                 else "unknown"))
    torch_facts = wait_torch() if wait_torch is not None else None
    return DoctorFacts(host=wait_host(), nvml=wait_nvml(), wheel=wait_wheel(), torch=torch_facts)


def _wheel_from_torch(t: TorchFacts) -> WheelFacts:
    missing = (t.import_error or "").startswith("ModuleNotFoundError: No module named 'torch'")
    return WheelFacts(installed=not missing, version=t.version,
                      cuda_version=t.cuda_version, hip_version=t.hip_version,
                      cpu_only=t.cuda_version is None and t.hip_version is None
                      if t.imported else None)


def mps_reason(torch_facts: TorchFacts, host_facts: HostFacts | None) -> str:
    """Why no MPS device is usable, in words (there is no MPS finding off macOS)."""
    os_name = host_facts.os_name if host_facts is not None else sys.platform
    if not torch_facts.imported:
        return "torch could not be imported"
    if os_name not in ("Darwin", "darwin"):
        return f"MPS is Apple-only (this is {os_name or 'not macOS'})"
    if not torch_facts.mps_built:
        return f"this torch build has no MPS support ({torch_facts.version})"
    if not torch_facts.mps_available:
        return "MPS is built but not available (needs macOS 12.3+ and an Apple GPU)"
    return "the MPS live check failed"


def reason_finding(kind: str, findings: Sequence[Finding]) -> Finding | None:
    """The finding that explains why no ``kind`` ("cuda" or "mps") device is usable.

    Picked by id, most specific first, never by severity alone: an unrelated warning (a
    small /dev/shm) must not become the reason, nor a CUDA finding the reason for MPS.
    """
    ids = _CUDA_REASON_IDS if kind == "cuda" else _MPS_REASON_IDS
    by_id: dict[str, Finding] = {}
    for f in findings:
        if f.severity in ("error", "warn", "info"):
            by_id.setdefault(f.id, f)
    return next((by_id[i] for i in ids if i in by_id), None)


def availability_from_facts(nvml: NvmlFacts, torch: TorchFacts,
                            host: HostFacts | None = None) -> DeviceAvailability:
    """Usable devices and, where none of a kind is usable, the reason; pure, never raises."""
    from devcheck.rules.diagnose import diagnose  # local: keeps "import devcheck.doctor" light

    facts = DoctorFacts(host=host or HostFacts(), nvml=nvml, wheel=_wheel_from_torch(torch),
                        torch=torch)
    findings = diagnose(facts)
    checked = {c.device: c.ok for c in torch.live_checks}
    if checked:
        cuda = [c.device for c in torch.live_checks if c.ok and c.device.startswith("cuda")]
        mps = checked.get("mps", False)
    else:  # not live-checked: trust torch's own availability
        cuda = [f"cuda:{d.index}" for d in torch.devices] if torch.cuda_available else []
        mps = torch.mps_available
    usable = ("cpu", *cuda, *(("mps",) if mps else ()))
    cuda_reason = None
    if not cuda:
        reason = reason_finding("cuda", findings)
        if reason is not None:
            cuda_reason = reason.title
        elif not nvml.gpus and nvml.available:
            cuda_reason = "the NVIDIA driver reports no GPU"
        else:
            cuda_reason = torch.cuda_unavailable_reason or "torch sees no CUDA device"
    names = tuple(g.name or f"GPU {g.index}" for g in nvml.gpus) or tuple(
        d.name or f"cuda:{d.index}" for d in torch.devices)
    return DeviceAvailability(
        usable=usable, cuda_reason=cuda_reason,
        mps_reason=None if mps else mps_reason(torch, host),
        torch_version=torch.version, cuda_runtime=torch.cuda_version, gpu_names=names,
        findings=tuple(f for f in findings if f.severity == "error"))


def device_availability(*, live: bool = True, timeout_s: float = 30.0) -> DeviceAvailability:
    """Probe NVML, the host and torch, then :func:`availability_from_facts`; never raises."""
    try:
        facts = collect(live=live, timeout_s=timeout_s)
        assert facts.torch is not None
        return availability_from_facts(facts.nvml, facts.torch, facts.host)
    except Exception as exc:  # defensive: the plugin must get an answer
        return DeviceAvailability(cuda_reason=f"devcheck failed: {type(exc).__name__}: {exc}",
                                  mps_reason="devcheck failed",
                                  findings=(Finding("doctor_failed", "error", "devcheck failed",
                                                    f"{type(exc).__name__}: {exc}"),))
