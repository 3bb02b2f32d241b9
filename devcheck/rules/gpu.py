"""Rules about the NVIDIA driver, the torch wheel's CUDA build and the GPUs.

Split from :mod:`devcheck.rules.diagnose` (which runs every rule and sorts the findings); the
same policy applies: pure functions, facts in, findings out, each with evidence and fix.
Also the helpers the other rules share: which build torch is (:func:`build_of`, from the
imported module or else from the wheel's files) and how GPUs and sizes are named.
"""

from __future__ import annotations

from dataclasses import dataclass

from devcheck.facts import DoctorFacts, Finding, GpuFacts, Severity
from devcheck.probe.wheel import (
    arch_supported,
    cuda_index_for,
    install_command,
    lowest_arch,
    min_driver_text,
    parse_version,
)

GiB = 1024**3
MiB = 1024**2
BUSY_MEMORY_FRACTION = 0.9
BUSY_UTILIZATION_PCT = 90
# Why no CUDA device is usable, most specific first (the availability's reason is the first
# of these found). The machine-level causes in the middle also silence the catch-all
# ``torch_cannot_use_gpu``: they already say why.
CUDA_REASON_IDS = (
    "torch_not_installed", "torch_import_failed", "torch_probe_failed", "cpu_only_wheel",
    "driver_too_old", "driver_library_mismatch", "nvml_timeout", "nvml_query_failed",
    "gpu_arch_not_in_wheel",
    "cuda_visible_devices", "no_driver", "no_gpu", "torch_cannot_use_gpu", "gpu_lost",
    "live_check_failed",
)
MACHINE_CAUSES = CUDA_REASON_IDS[3:CUDA_REASON_IDS.index("torch_cannot_use_gpu")]


@dataclass(frozen=True)
class Build:
    """The torch build, from the imported module when there is one, else from its files."""

    version: str | None
    cuda: str | None
    hip: str | None
    source: str  # "torch" | "wheel" | "none"
    # True: no GPU backend at all; False: one (CUDA, ROCm, XPU...); None: unknown (a
    # torch/version.py that could not be read says nothing, least of all "CPU-only").
    cpu_only: bool | None = None

    @property
    def label(self) -> str:
        return f"torch {self.version}" if self.version else "torch"


def build_of(facts: DoctorFacts) -> Build:
    t = facts.torch
    if t is not None and t.imported:
        return Build(t.version, t.cuda_version, t.hip_version, "torch",
                     t.cuda_version is None and t.hip_version is None)
    w = facts.wheel
    if w.installed:
        return Build(w.version, w.cuda_version, w.hip_version, "wheel", w.cpu_only)
    return Build(None, None, None, "none")


def healthy_gpus(facts: DoctorFacts) -> tuple[GpuFacts, ...]:
    return tuple(g for g in facts.nvml.gpus if g.error is None)


def gpu_label(g: GpuFacts) -> str:
    return f"GPU {g.index} ({g.name or 'unknown name'})"


def mib(n: int | None) -> str:
    return "?" if n is None else f"{n / MiB:,.0f} MiB"


def driver_fix(facts: DoctorFacts) -> str:
    """Install a wheel the driver supports (the newest index at or below its CUDA)."""
    index = cuda_index_for(facts.nvml.cuda_driver_version)
    if index:
        return (f"install a wheel this driver supports: `{install_command(index)}` (take "
                "torchvision/torchaudio from the same index)")
    return ("pick the command for your driver on https://pytorch.org/get-started/locally/ "
            "(`nvidia-smi` shows the driver's CUDA version)")



# --- driver / NVML -----------------------------------------------------------------------

def rule_nvml(facts: DoctorFacts) -> list[Finding]:
    n, build = facts.nvml, build_of(facts)
    if n.available and not n.gpus and n.error is None:
        pci = facts.host.nvidia_pci_devices
        return [Finding("no_gpu", "error" if pci else "warn",
                        "the NVIDIA driver is loaded but reports no GPU",
                        f"driver {n.driver_version or '?'} (CUDA {n.cuda_driver_version or '?'}); "
                        + (f"{pci} NVIDIA GPU(s) on the PCI bus" if pci else
                           "nvmlDeviceGetCount() is 0"),
                        "in a container, start it with GPU access (`docker run --gpus all`); "
                        "otherwise check `nvidia-smi` and `dmesg` (a GPU that fell off the bus "
                        "needs a reboot)", "no_driver")]
    torch_sees = bool(facts.torch is not None and facts.torch.cuda_available)
    if n.available:
        return [] if n.error is None else [_nvml_query_failed(facts, torch_sees)]
    kind = n.error_kind or "unknown"
    if kind == "bindings_missing":
        return [Finding("nvml_bindings_missing", "info",
                        "NVML bindings missing: GPU details unknown",
                        n.error or "pynvml not importable",
                        "`pip install nvidia-ml-py` (devcheck depends on it; this environment "
                        "lacks it)")]
    if kind == "timeout":
        return [Finding("nvml_timeout", "error", n.error or "NVML timed out", n.error or "",
                        "a driver call hung: check `nvidia-smi` (does it hang too?) and "
                        "`dmesg` for Xid errors; a reset (`nvidia-smi -r`) or reboot usually "
                        "clears it")]
    if kind == "driver_mismatch":
        return [Finding("driver_library_mismatch", "error",
                        "NVIDIA driver/library version mismatch", n.error or "",
                        "the driver was upgraded but the old kernel module is still loaded: reboot "
                        "(or reload the nvidia kernel modules)", "driver_too_old")]
    if kind == "no_permission":
        return [Finding("nvml_no_permission", "warn", "no permission to query the NVIDIA driver",
                        n.error or "", "add the user to the group owning /dev/nvidia* (often "
                        "'video'), or in a container pass the devices with `--gpus all`")]
    if kind not in ("library_not_found", "driver_not_loaded"):
        return [Finding("nvml_error", "warn", f"NVML failed: {n.error}", n.error or "",
                        "run `nvidia-smi` to see the driver's own error")]
    missing = kind == "library_not_found"
    what = ("libnvidia-ml.so.1 not found" if missing
            else "the NVIDIA kernel driver is not loaded")
    if torch_sees:
        return [Finding("nvml_missing", "info", f"GPU details unavailable ({what})", n.error or "",
                        "torch uses the GPU anyway; install the driver's NVML library (or mount it "
                        "into the container) for memory/utilization/process details")]
    return [_no_driver(facts, build, what, missing)]


def _nvml_query_failed(facts: DoctorFacts, torch_sees: bool) -> Finding:
    """NVML started (nvmlInit worked) but could not count or read the GPUs.

    The GPUs are unknown, not absent: an error, unless torch computes on CUDA anyway (then
    only the details are missing, and a warning says so).
    """
    n = facts.nvml
    listed = f"{len(n.gpus)} GPU(s) listed" if n.gpus else "no GPU listed"
    return Finding(
        "nvml_query_failed", "warn" if torch_sees else "error",
        f"the NVIDIA driver answers but cannot list its GPUs: {n.error}",
        f"nvmlInit() succeeded; then {n.error}; driver "
        f"{n.driver_version or '?'} (CUDA {n.cuda_driver_version or '?'}), {listed}"
        + ("; torch uses CUDA anyway" if torch_sees else ""),
        "run `nvidia-smi`: if it fails the same way, check `dmesg` for Xid errors and reset "
        "the GPU (`nvidia-smi -r`) or reboot; a driver upgraded without a reboot also does "
        "this (reboot)")


def _no_driver(facts: DoctorFacts, build: Build, what: str, missing: bool) -> Finding:
    """No driver answers: a machine without an NVIDIA GPU (fine) or a GPU without a driver.

    Said in a beginner's words; the raw NVML error and torch's own sentence are in the facts
    (and the JSON), so the finding does not repeat them.
    """
    pci = facts.host.nvidia_pci_devices
    needs = (f"{build.label} is built for CUDA {build.cuda} and needs "
             f"{min_driver_text(build.cuda)} to use a GPU" if build.cuda else None)
    fix_gpu = (f"install {min_driver_text(build.cuda)} and check it with `nvidia-smi`"
               if build.cuda else "install the NVIDIA driver and check it with `nvidia-smi`")
    if facts.host.in_container:
        fix_gpu += ("; in a container, start it with GPU access (`docker run --gpus all ...`, "
                    "NVIDIA Container Toolkit) instead")
    if pci:
        evidence = "; ".join(x for x in (f"{pci} NVIDIA GPU(s) on the PCI bus, but {what}",
                                         needs) if x)
        state = "missing" if missing else "not loaded"
        return Finding("no_driver", "error", f"NVIDIA GPU present, driver {state}", evidence,
                       fix_gpu, "no_driver")
    severity: Severity = "warn" if build.cuda else "info"
    smaller = ("; a CPU-only wheel is far smaller: `pip install torch --index-url "
               "https://download.pytorch.org/whl/cpu`" if build.cuda else "")
    if pci == 0:
        evidence = "no NVIDIA display/3D controller on the PCI bus, and " + what
        if build.cuda:
            evidence += (f"; {build.label} is a CUDA build: it runs on the CPU as well, its "
                         "CUDA part stays unused")
        return Finding(
            "no_driver", severity, "no NVIDIA GPU on this machine: torch uses the CPU", evidence,
            f"nothing to fix for the CPU: use device='cpu'{smaller}. To use a GPU you need a "
            "machine with an NVIDIA GPU (a cloud or Colab GPU runtime, say)"
            + (f", where this wheel needs {min_driver_text(build.cuda)}" if build.cuda else ""),
            "no_driver")
    evidence = "; ".join(x for x in (f"no NVIDIA driver answers ({what})", needs) if x)
    return Finding("no_driver", severity, "no NVIDIA driver: torch uses the CPU", evidence,
                   f"no GPU needed? torch runs on the CPU (use device='cpu'){smaller}. "
                   f"To use an NVIDIA GPU: {fix_gpu}", "no_driver")


def _gpus_seen(facts: DoctorFacts) -> tuple[int, str]:
    """How many NVIDIA GPUs this machine has, and the evidence in words."""
    n = facts.nvml
    if n.gpus:
        return len(n.gpus), (f"NVML sees {len(n.gpus)} GPU(s), driver {n.driver_version or '?'} "
                             f"(CUDA {n.cuda_driver_version or '?'})")
    pci = facts.host.nvidia_pci_devices or 0
    return pci, (f"{pci} NVIDIA GPU(s) on the PCI bus" if pci else "no NVIDIA GPU seen")


def rule_cpu_only_wheel(facts: DoctorFacts) -> list[Finding]:
    build = build_of(facts)
    if build.source == "none" or build.cuda:
        return []
    gpus, seen = _gpus_seen(facts)
    if build.cpu_only is None and not build.hip:
        return [_build_unknown(facts, gpus, seen)]
    if not gpus:
        return []
    kind = (f"a ROCm build (HIP {build.hip})" if build.hip else
            "CPU-only" if build.cpu_only else "built without CUDA")
    return [Finding("cpu_only_wheel", "error",
                    f"this torch build is {kind} ({build.version or '?'})",
                    f"{build.label} has no CUDA support (torch.version.cuda is None) but {seen}",
                    driver_fix(facts), "cpu_only_wheel")]


def _build_unknown(facts: DoctorFacts, gpus: int, seen: str) -> Finding:
    """torch is installed but its torch/version.py could not be read: the build is unknown.

    Never "CPU-only" on that evidence: a warning on a GPU machine (whether torch can use the
    GPUs is unknown), information elsewhere.
    """
    w = facts.wheel
    where = f"{w.location}/version.py" if w.location else "torch/version.py"
    why = w.error or f"{where} does not say which CUDA torch was built for"
    index = cuda_index_for(facts.nvml.cuda_driver_version)
    reinstall = install_command(index) if index else "pip install --force-reinstall torch"
    return Finding(
        "wheel_build_unknown", "warn" if gpus else "info",
        "the torch build is unknown: torch/version.py could not be read",
        f"{why}; {seen}",
        "`devcheck doctor` imports torch and asks it directly; every torch wheel ships "
        f"torch/version.py, so without it the install is damaged: `{reinstall}`")


def rule_driver_too_old(facts: DoctorFacts) -> list[Finding]:
    build, n = build_of(facts), facts.nvml
    need, have = parse_version(build.cuda), parse_version(n.cuda_driver_version)
    t = facts.torch
    reason = (t.cuda_unavailable_reason or "") if t is not None else ""
    torch_says = any(s in reason for s in ("too old", "insufficient for CUDA runtime"))
    if need is None or (have is None and not torch_says):
        return []
    if have is not None and have >= need and not torch_says:
        return []
    evidence = (f"{build.label} bundles the CUDA {build.cuda} runtime; driver "
                f"{n.driver_version or '?'} supports CUDA {n.cuda_driver_version or '?'}")
    if torch_says:
        evidence += f"; torch says: {reason}"
    fix = f"update to {min_driver_text(build.cuda)}, or {driver_fix(facts)}"
    if have is not None and have[0] == need[0] and not torch_says:
        return [Finding("driver_too_old", "warn",
                        f"driver's CUDA {n.cuda_driver_version} is older than the wheel's CUDA "
                        f"{build.cuda}",
                        evidence + " (same major version: minor-version compatibility runs most "
                        "code, but PTX-JIT kernels and newer features fail)", fix,
                        "driver_too_old")]
    return [Finding("driver_too_old", "error",
                    f"the NVIDIA driver is too old for this wheel (driver CUDA "
                    f"{n.cuda_driver_version or '?'} < wheel CUDA {build.cuda})",
                    evidence, fix, "driver_too_old")]


# --- GPUs --------------------------------------------------------------------------------

def rule_gpu_arch(facts: DoctorFacts) -> list[Finding]:
    t = facts.torch
    if t is None or not t.arch_list or not build_of(facts).cuda:
        return []
    caps = {g.index: (g.compute_capability, gpu_label(g)) for g in healthy_gpus(facts)}
    if not caps:
        caps = {d.index: (d.capability, f"cuda:{d.index} ({d.name})") for d in t.devices}
    findings = []
    arch = ", ".join(t.arch_list)
    lowest = lowest_arch(t.arch_list)
    for _, (cc, label) in sorted(caps.items()):
        if arch_supported(cc, t.arch_list) is not False:
            continue
        old = lowest is not None and (parse_version(cc) or (0, 0)) < lowest
        fix = ("install a wheel still built for this GPU (older CUDA wheels keep older archs, e.g. "
               "cu126 for Pascal/Volta) and check `torch.cuda.get_arch_list()` lists sm_"
               f"{(cc or '').replace('.', '')}" if old else
               "install a newer torch wheel (newest cuXXX index) that includes this architecture")
        findings.append(Finding(
            "gpu_arch_not_in_wheel", "error",
            f"{label} has compute capability {cc}, which {t.version} has no kernels for",
            f"the wheel's arch list is {arch}; sm_{(cc or '').replace('.', '')} is not covered "
            "(no same-major sm_ binary at or below it, no compute_ PTX to JIT)", fix,
            "gpu_arch_not_in_wheel"))
    return findings


def rule_gpu_lost(facts: DoctorFacts) -> list[Finding]:
    return [Finding("gpu_lost", "error", f"GPU {g.index} is not usable: {g.error}",
                    f"NVML lists GPU {g.index} but every query fails: {g.error}",
                    "check `nvidia-smi` and `dmesg` for Xid errors; reset the GPU "
                    "(`nvidia-smi -r -i N`) or reboot; meanwhile hide it with CUDA_VISIBLE_DEVICES")
            for g in facts.nvml.gpus if g.error is not None]


def rule_gpu_busy(facts: DoctorFacts) -> list[Finding]:
    findings = []
    for g in healthy_gpus(facts):
        used, total = g.memory_used_bytes, g.memory_total_bytes
        full = (used is not None and total is not None and total > 0
                and used / total >= BUSY_MEMORY_FRACTION)
        busy = (g.utilization_gpu_pct or 0) >= BUSY_UTILIZATION_PCT
        if not (full or busy or g.processes):
            continue
        procs = ", ".join(f"pid {p.pid} {p.name or '?'} ({mib(p.used_memory_bytes)})"
                          for p in g.processes) or "none listed"
        evidence = (f"memory {mib(used)} of {mib(total)} used, utilization "
                    f"{g.utilization_gpu_pct if g.utilization_gpu_pct is not None else '?'}%; "
                    f"other processes: {procs}")
        if full or busy:
            findings.append(Finding(
                "gpu_busy", "warn",
                f"{gpu_label(g)} is {'nearly full' if full else 'busy'}", evidence,
                "stop the processes listed (or wait), or pick a free GPU with "
                "CUDA_VISIBLE_DEVICES=<index> set before starting Python; expect "
                "'CUDA out of memory' otherwise"))
        else:
            findings.append(Finding("gpu_shared", "info",
                                    f"{gpu_label(g)} is shared with other processes", evidence))
    return findings
