"""The facts devcheck gathers and the findings it derives from them.

Every probe returns one of these frozen dataclasses and never raises: a missing library,
a driver error or a hang becomes a fact with ``error`` set, so one failure costs one fact,
not the report. Units live in field names (``*_bytes``, ``*_pct``, ``*_w``, ``*_c``) and
``None`` always means "not available here", never zero. ``to_dict()`` is what the JSON
renderer emits, so field names are part of the stable JSON schema: add, never rename.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["ok", "info", "warn", "error"]
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}  # C0 controls and DEL
_CONTROL.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})  # C1 controls (CSI 0x9b)


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters shown as ``\\x1b``-style escapes.

    Names from outside devcheck (a GPU's name from NVML, a process name any local user can
    set) must not reach a terminal as escape sequences that recolour, move the cursor or
    retitle the window; the escape keeps what was there visible.
    """
    table = dict(_CONTROL)
    if keep_newlines:
        table.pop(0x0A)
    return text.translate(table)


def outside_text(value: Any) -> str | None:
    """A name from outside devcheck (NVML gives bytes on old bindings, str on new ones, or
    None) as printable str: it reaches terminals, plots and JSON from here."""
    if value is None:
        return None
    return printable(value.decode("utf-8", "replace") if isinstance(value, bytes)
                     else str(value))


def _plain(value: Any) -> Any:
    """Turn dataclasses, tuples and mappings into JSON-ready builtins."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


class ToDict:
    """Mixin: ``to_dict()`` as JSON-ready builtins (tuples become lists)."""

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class Finding(ToDict):
    """One diagnosis: what is wrong (or fine), the evidence seen, and what to do.

    ``id`` is stable (tools key on it); ``pitfall`` names the entry of
    ``devcheck pitfalls`` that reproduces the problem, when one does.
    """

    id: str
    severity: Severity
    title: str
    evidence: str
    fix: str | None = None
    pitfall: str | None = None


@dataclass(frozen=True)
class HostFacts(ToDict):
    os_name: str | None = None  # "Linux", "Windows", "Darwin"
    os_release: str | None = None
    platform: str | None = None
    machine: str | None = None  # "x86_64", "aarch64"
    python_version: str | None = None
    python_executable: str | None = None
    cpu_physical: int | None = None
    cpu_logical: int | None = None
    cpu_usable: int | None = None  # CPUs this process may run on (affinity / cgroup)
    ram_total_bytes: int | None = None
    ram_available_bytes: int | None = None
    shm_total_bytes: int | None = None  # /dev/shm, where DataLoader workers pass batches
    shm_free_bytes: int | None = None
    in_container: bool | None = None
    container_kind: str | None = None  # "docker", "podman", "kubernetes", ...
    is_wsl: bool | None = None
    env: dict[str, str] = field(default_factory=dict)  # relevant variables that are set
    errors: tuple[str, ...] = ()  # sub-probes that failed, with why
    # NVIDIA display/3D controllers on the PCI bus (Linux sysfs), whether or not a driver is
    # loaded: tells "no NVIDIA GPU here" from "a GPU without a driver / container without GPUs".
    nvidia_pci_devices: int | None = None


@dataclass(frozen=True)
class GpuProcess(ToDict):
    pid: int
    name: str | None = None
    used_memory_bytes: int | None = None
    kind: str = "compute"  # "compute" | "graphics"


@dataclass(frozen=True)
class GpuFacts(ToDict):
    """One GPU as NVML sees it; a field NVML does not support is None."""

    index: int
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    compute_capability: str | None = None  # "9.0"
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    utilization_gpu_pct: int | None = None
    utilization_memory_pct: int | None = None
    temperature_c: int | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    processes: tuple[GpuProcess, ...] = ()
    error: str | None = None  # e.g. "GPU is lost" — the GPU is listed but unusable
    # field name -> why NVML gave no value ("NotSupported", "NoPermission", "Uninitialized");
    # the field itself is None. "processes" names a process record that could not be read.
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NvmlFacts(ToDict):
    available: bool = False
    error: str | None = None  # the exact error text when the library did not load
    error_kind: str | None = None  # bindings_missing | library_not_found | driver_not_loaded
    #                                | no_permission | timeout | unknown
    driver_version: str | None = None  # "580.65.06"
    cuda_driver_version: str | None = None  # newest CUDA the driver supports, "13.0"
    gpus: tuple[GpuFacts, ...] = ()


@dataclass(frozen=True)
class WheelFacts(ToDict):
    """The installed torch distribution, read from its files without importing it."""

    installed: bool = False
    version: str | None = None  # "2.14.1+cu130"
    cuda_version: str | None = None  # "13.0"; None for CPU-only and ROCm builds
    hip_version: str | None = None
    cpu_only: bool | None = None
    location: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class TorchDevice(ToDict):
    index: int
    name: str | None = None
    capability: str | None = None  # "9.0"
    memory_total_bytes: int | None = None


@dataclass(frozen=True)
class LiveCheck(ToDict):
    """Proof that a device computes: allocate, matmul, compare with the CPU result."""

    device: str  # "cpu", "cuda:0", "mps"
    ok: bool
    seconds: float | None = None
    max_abs_error: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class TorchFacts(ToDict):
    imported: bool = False
    import_error: str | None = None
    error: str | None = None  # the probe itself failed (e.g. timed out)
    version: str | None = None
    cuda_version: str | None = None  # torch.version.cuda: the CUDA runtime torch was built with
    hip_version: str | None = None
    cudnn_version: int | None = None
    arch_list: tuple[str, ...] = ()  # ("sm_75", "sm_80", ...)
    cuda_available: bool = False
    cuda_unavailable_reason: str | None = None  # torch's own warning text, when it gave one
    device_count: int = 0
    devices: tuple[TorchDevice, ...] = ()
    default_device: str | None = None  # torch.get_default_device()
    mps_built: bool = False
    mps_available: bool = False
    live_checks: tuple[LiveCheck, ...] = ()
    import_seconds: float | None = None  # how long ``import torch`` took (in the probe's process)
    errors: dict[str, str] = field(default_factory=dict)  # field name -> why it is unknown


@dataclass(frozen=True)
class DoctorFacts(ToDict):
    host: HostFacts
    nvml: NvmlFacts
    wheel: WheelFacts
    torch: TorchFacts | None  # None where torch was not asked (``devcheck gpus``)


@dataclass(frozen=True)
class DeviceAvailability(ToDict):
    """Which devices passed the live check, and why the others did not.

    The one summary the trainer and the pytest plugin need: ``usable`` starts with "cpu";
    ``cuda_reason`` / ``mps_reason`` say why no such device is usable (None when one is).
    """

    usable: tuple[str, ...] = ("cpu",)
    cuda_reason: str | None = None
    mps_reason: str | None = None
    torch_version: str | None = None
    cuda_version: str | None = None  # the CUDA runtime torch was built with ("13.0")
    gpu_names: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()  # error-severity findings behind the reasons

    @property
    def cuda_runtime(self) -> str | None:
        """The old name of :attr:`cuda_version` (kept so callers do not break)."""
        return self.cuda_version


@dataclass(frozen=True)
class DoctorResult(ToDict):
    """What :func:`devcheck.doctor` returns: every fact and the findings drawn from them."""

    facts: DoctorFacts
    findings: tuple[Finding, ...]
    availability: DeviceAvailability

    @property
    def ok(self) -> bool:
        """No finding of severity ``error`` (the doctor's exit code 0)."""
        return not any(f.severity == "error" for f in self.findings)
