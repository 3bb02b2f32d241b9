"""Rules: facts in, findings out. Pure functions, no I/O, one rule per problem.

Each rule looks at the :class:`DoctorFacts` and returns zero or more :class:`Finding`s with
the evidence it saw and the fix. Severity policy (documented in docs/doctor.md):
``error`` means torch cannot use hardware that is there, or torch itself is broken;
``warn`` means something will bite later (or a CUDA wheel on a machine with no NVIDIA GPU);
``info`` is advice; ``ok`` is proof that something works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from devcheck.facts import DoctorFacts, Finding, GpuFacts, Severity
from devcheck.wheel import (
    arch_supported,
    cuda_index_for,
    install_command,
    lowest_arch,
    min_driver_text,
    parse_version,
)

GiB = 1024**3
LIVE_SIZE = 16  # torchenv.LIVE_SIZE, repeated so rules never import the probe
MiB = 1024**2
SHM_MIN_BYTES = 1 * GiB  # Docker's default is 64 MiB; a few batches of images need more
BUSY_MEMORY_FRACTION = 0.9
BUSY_UTILIZATION_PCT = 90
_ORDER: dict[Severity, int] = {"error": 0, "warn": 1, "info": 2, "ok": 3}


@dataclass(frozen=True)
class Build:
    """The torch build, from the imported module when there is one, else from its files."""

    version: str | None
    cuda: str | None
    hip: str | None
    source: str  # "torch" | "wheel" | "none"

    @property
    def label(self) -> str:
        return f"torch {self.version}" if self.version else "torch"


def build_of(facts: DoctorFacts) -> Build:
    t = facts.torch
    if t is not None and t.imported:
        return Build(t.version, t.cuda_version, t.hip_version, "torch")
    w = facts.wheel
    if w.installed:
        return Build(w.version, w.cuda_version, w.hip_version, "wheel")
    return Build(None, None, None, "none")


def _healthy_gpus(facts: DoctorFacts) -> tuple[GpuFacts, ...]:
    return tuple(g for g in facts.nvml.gpus if g.error is None)


def _gpu_label(g: GpuFacts) -> str:
    return f"GPU {g.index} ({g.name or 'unknown name'})"


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / MiB:,.0f} MiB"


def _driver_fix(facts: DoctorFacts, build: Build) -> str:
    index = cuda_index_for(facts.nvml.cuda_driver_version)
    if index:
        return (f"install a wheel this driver supports: `{install_command(index)}` (take "
                "torchvision/torchaudio from the same index)")
    return ("pick the command for your driver on https://pytorch.org/get-started/locally/ "
            "(`nvidia-smi` shows the driver's CUDA version)")


# --- torch itself ------------------------------------------------------------------------

def rule_torch_import(facts: DoctorFacts) -> list[Finding]:
    t = facts.torch
    if t is None:
        if not facts.wheel.installed:
            return [Finding("torch_not_installed", "info", "torch is not installed",
                            facts.wheel.error or "no importable 'torch' package",
                            "install it: `pip install torch` (see "
                            "https://pytorch.org/get-started/locally/)")]
        return []
    if t.imported:
        return []
    if t.import_error is None:
        title = t.error if (t.error or "").startswith("torch probe") else \
            f"torch probe failed: {t.error}"
        return [Finding("torch_probe_failed", "error", title or "torch probe failed",
                        t.error or "no result",
                        "run `python -c \"import torch; print(torch.cuda.is_available())\"` to see "
                        "where it stops; a hang during CUDA init often means a wedged GPU "
                        "(check `nvidia-smi`, `dmesg` for Xid errors); raise --timeout if it is "
                        "just slow")]
    if not facts.wheel.installed:
        return [Finding("torch_not_installed", "error", "torch is not installed", t.import_error,
                        "install it: `pip install torch` (pick the index for your driver on "
                        "https://pytorch.org/get-started/locally/)")]
    return [Finding("torch_import_failed", "error", f"import torch failed: {t.import_error}",
                    f"torch {facts.wheel.version or '?'} is installed"
                    + (f" at {facts.wheel.location}" if facts.wheel.location else "")
                    + f", but importing it raised {t.import_error}",
                    "reinstall it in this environment: `pip install --force-reinstall torch`; "
                    "if the error names a .so file, check LD_LIBRARY_PATH for another CUDA's "
                    "libraries")]


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
    if n.available:
        return []
    t = facts.torch
    torch_sees = bool(t is not None and t.cuda_available)
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
    what = ("NVML library not found: libnvidia-ml.so.1" if kind == "library_not_found"
            else "the NVIDIA kernel driver is not loaded")
    if torch_sees:
        return [Finding("nvml_missing", "info", f"GPU details unavailable ({what})", n.error or "",
                        "torch uses the GPU anyway; install the driver's NVML library (or mount it "
                        "into the container) for memory/utilization/process details")]
    pci = facts.host.nvidia_pci_devices
    evidence = [n.error or what]
    if pci:
        evidence.append(f"{pci} NVIDIA GPU(s) on the PCI bus")
    elif pci == 0:
        evidence.append("no NVIDIA GPU on the PCI bus")
    if build.cuda:
        evidence.append(f"{build.label} is built for CUDA {build.cuda} and needs "
                        f"{min_driver_text(build.cuda)} to use a GPU")
    if t is not None and t.cuda_unavailable_reason:
        evidence.append(f"torch says: {t.cuda_unavailable_reason}")
    container = facts.host.in_container
    fix_gpu = (f"install {min_driver_text(build.cuda)} and check it with `nvidia-smi`"
               if build.cuda else "install the NVIDIA driver and check it with `nvidia-smi`")
    if container:
        fix_gpu += ("; in a container, start it with GPU access (`docker run --gpus all ...`, "
                    "NVIDIA Container Toolkit) instead")
    if pci:
        severity: Severity = "error"
        fix = fix_gpu
    else:
        severity = "warn" if build.cuda else "info"
        smaller = ("; a CPU-only wheel is far smaller: `pip install torch --index-url "
                   "https://download.pytorch.org/whl/cpu`" if build.cuda else "")
        fix = (f"no GPU needed? torch runs on the CPU (use device='cpu'){smaller}. "
               f"To use an NVIDIA GPU: {fix_gpu}")
    return [Finding("no_driver", severity, f"no NVIDIA driver ({what})", "; ".join(evidence), fix,
                    "no_driver")]


def rule_cpu_only_wheel(facts: DoctorFacts) -> list[Finding]:
    build = build_of(facts)
    if build.source == "none" or build.cuda:
        return []
    gpus = len(facts.nvml.gpus) or (facts.host.nvidia_pci_devices or 0)
    if not gpus:
        return []
    kind = f"a ROCm build (HIP {build.hip})" if build.hip else "CPU-only"
    seen = (f"NVML sees {len(facts.nvml.gpus)} GPU(s), driver {facts.nvml.driver_version} "
            f"(CUDA {facts.nvml.cuda_driver_version})" if facts.nvml.gpus
            else f"{gpus} NVIDIA GPU(s) on the PCI bus")
    return [Finding("cpu_only_wheel", "error", f"this torch build is {kind} ({build.version})",
                    f"{build.label} has no CUDA support (torch.version.cuda is None) but {seen}",
                    _driver_fix(facts, build), "cpu_only_wheel")]


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
    fix = f"update to {min_driver_text(build.cuda)}, or {_driver_fix(facts, build)}"
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
    caps = {g.index: (g.compute_capability, _gpu_label(g)) for g in _healthy_gpus(facts)}
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
    for g in _healthy_gpus(facts):
        used, total = g.memory_used_bytes, g.memory_total_bytes
        full = used is not None and bool(total) and used / total >= BUSY_MEMORY_FRACTION
        busy = (g.utilization_gpu_pct or 0) >= BUSY_UTILIZATION_PCT
        if not (full or busy or g.processes):
            continue
        procs = ", ".join(f"pid {p.pid} {p.name or '?'} ({_mib(p.used_memory_bytes)})"
                          for p in g.processes) or "none listed"
        evidence = (f"memory {_mib(used)} of {_mib(total)} used, utilization "
                    f"{g.utilization_gpu_pct if g.utilization_gpu_pct is not None else '?'}%; "
                    f"other processes: {procs}")
        if full or busy:
            findings.append(Finding(
                "gpu_busy", "warn",
                f"{_gpu_label(g)} is {'nearly full' if full else 'busy'}", evidence,
                "stop the processes listed (or wait), or pick a free GPU with "
                "CUDA_VISIBLE_DEVICES=<index> set before starting Python; expect "
                "'CUDA out of memory' otherwise"))
        else:
            findings.append(Finding("gpu_shared", "info",
                                    f"{_gpu_label(g)} is shared with other processes", evidence))
    return findings


def _parse_visible(value: str, facts: DoctorFacts) -> tuple[list[str], str | None]:
    """Mimic the CUDA runtime: entries up to the first invalid one count, the rest is ignored."""
    gpus = facts.nvml.gpus if facts.nvml.available else ()
    visible: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if entry.isdigit():
            if gpus and int(entry) >= len(gpus):
                return visible, (f"index {entry} does not exist (NVML sees {len(gpus)} GPU(s): "
                                 f"0..{len(gpus) - 1})")
            visible.append(entry)
        elif entry.startswith(("GPU-", "MIG-")):
            if gpus and entry.startswith("GPU-") and not any(
                    (g.uuid or "").startswith(entry) for g in gpus):
                return visible, f"no GPU has a UUID starting with {entry!r}"
            visible.append(entry)
        else:
            why = "an empty entry" if not entry else f"{entry!r} is not a GPU index or UUID"
            return visible, why
    return visible, None


def rule_cuda_visible_devices(facts: DoctorFacts) -> list[Finding]:
    value = facts.host.env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return []
    visible, problem = _parse_visible(value, facts)
    total = len(facts.nvml.gpus)
    shown = f"CUDA_VISIBLE_DEVICES={value!r}"
    fix = ("set it to indices that exist (e.g. CUDA_VISIBLE_DEVICES=0,1) or unset it, before "
           "Python starts; torch renumbers the visible GPUs from cuda:0")
    if not visible:
        if value.strip() in ("", "-1") and not problem:
            problem = "it is set to hide every GPU"
        severity: Severity = "warn" if total else "info"
        return [Finding("cuda_visible_devices", severity,
                        f"{shown} hides every GPU from torch",
                        f"{problem or 'no valid entry'}; NVML sees {total} GPU(s)", fix,
                        "invalid_device_ordinal")]
    if problem:
        return [Finding("cuda_visible_devices", "warn", f"{shown} is malformed",
                        f"{problem}; CUDA stops parsing there, so only {', '.join(visible)} "
                        f"is visible (as cuda:0..cuda:{len(visible) - 1})", fix,
                        "invalid_device_ordinal")]
    if total and len(visible) < total:
        return [Finding("cuda_visible_devices", "info",
                        f"{shown} shows {len(visible)} of {total} GPUs",
                        f"torch sees them as cuda:0..cuda:{len(visible) - 1}; other indices raise "
                        "'invalid device ordinal'", None, "invalid_device_ordinal")]
    return []


# --- torch and the GPUs together ---------------------------------------------------------

_EXPLAINS_NO_CUDA = ("no_gpu", "cpu_only_wheel", "driver_too_old", "cuda_visible_devices",
                     "no_driver",
                     "gpu_arch_not_in_wheel", "driver_library_mismatch", "nvml_timeout")


def rule_torch_cannot_use_gpu(facts: DoctorFacts, earlier: list[Finding]) -> list[Finding]:
    """NVML sees GPUs, the wheel has CUDA, yet torch says no, and no other rule said why."""
    t, build = facts.torch, build_of(facts)
    gpus = _healthy_gpus(facts)
    if t is None or not t.imported or t.cuda_available or not gpus or not build.cuda:
        return []
    if any(f.id in _EXPLAINS_NO_CUDA and f.severity in ("error", "warn") for f in earlier):
        return []
    reason = (t.cuda_unavailable_reason
              or "torch.cuda.is_available() returned False without a reason")
    return [Finding("torch_cannot_use_gpu", "error",
                    f"NVML sees {len(gpus)} GPU(s) but torch cannot use them",
                    f"torch says: {reason}",
                    "read torch's reason above; common causes: the process was started with a "
                    "different LD_LIBRARY_PATH/CUDA libraries, /dev/nvidia* not accessible, or "
                    "the GPU is in an exclusive/prohibited compute mode (`nvidia-smi -q -d "
                    "COMPUTE`)")]


def rule_live_checks(facts: DoctorFacts) -> list[Finding]:
    t = facts.torch
    if t is None:
        return []
    findings = []
    for check in t.live_checks:
        if check.ok:
            continue
        error = check.error or "unknown failure"
        pitfall = "gpu_arch_not_in_wheel" if "no kernel image" in error else None
        findings.append(Finding(
            "live_check_failed", "error", f"{check.device} failed the live check",
            f"a {LIVE_SIZE}x{LIVE_SIZE} matmul on {check.device} failed: {error}",
            "the device is listed but does not compute correctly: see the other findings; "
            "rerun with CUDA_LAUNCH_BLOCKING=1 for the exact failing call", pitfall))
    return findings


def rule_works(facts: DoctorFacts) -> list[Finding]:
    """The good news, with proof: which devices computed, and how fast."""
    t = facts.torch
    if t is None or not t.imported:
        return []
    findings = []
    names = {f"cuda:{d.index}": d.name for d in t.devices}
    for check in t.live_checks:
        if check.ok and check.device != "cpu":
            ms = f"{check.seconds * 1000:.1f} ms" if check.seconds is not None else "?"
            label = f"{check.device} ({names.get(check.device) or check.device})"
            findings.append(Finding(f"{check.device.split(':')[0]}_ok", "ok",
                                    f"{label} works", f"matmul matched the CPU result "
                                    f"(max error {check.max_abs_error:.2g}) in {ms}"))
    if t.cuda_available and not t.live_checks:
        findings.append(Finding("cuda_not_live_checked", "info",
                                f"torch sees {t.device_count} CUDA device(s) (not live-checked)",
                                "run without --no-live to prove they compute"))
    cpu = [c for c in t.live_checks if c.device == "cpu" and c.ok]
    if cpu:
        findings.append(Finding("cpu_ok", "ok", f"torch {t.version} computes on the CPU",
                                "matmul matched float64 math (max error "
                                f"{cpu[0].max_abs_error:.2g})"))
    return findings


def rule_default_device(facts: DoctorFacts) -> list[Finding]:
    t = facts.torch
    if t is None or t.default_device in (None, "cpu"):
        return []
    return [Finding("default_device_not_cpu", "warn",
                    f"the default device is {t.default_device}",
                    f"torch.get_default_device() is {t.default_device} (set by "
                    "torch.set_default_device); a shuffled DataLoader then raises \"Expected a "
                    "'cuda' device type for generator but found 'cpu'\"",
                    "don't set a global default: `model.to(device)` and `X, y = X.to(device), "
                    "y.to(device)` per batch; or pass `generator=torch.Generator(device=...)` to "
                    "the "
                    "DataLoader", "default_device_sampler_generator")]


def rule_mps(facts: DoctorFacts) -> list[Finding]:
    t = facts.torch
    if t is None or facts.host.os_name != "Darwin" or t.mps_available:
        return []
    if not t.mps_built:
        return [Finding("mps_not_built", "warn", "this torch build has no MPS support",
                        f"torch {t.version}: torch.backends.mps.is_built() is False",
                        "install the standard macOS wheel: `pip install --force-reinstall torch`")]
    return [Finding("mps_unavailable", "warn", "MPS is built but not available",
                    "torch.backends.mps.is_available() is False",
                    "MPS needs macOS 12.3+ on Apple silicon or an AMD GPU; check the "
                    "macOS version")]


# --- host --------------------------------------------------------------------------------

def rule_shm(facts: DoctorFacts) -> list[Finding]:
    h = facts.host
    if h.os_name != "Linux" or h.shm_total_bytes is None:
        return []
    small = h.shm_total_bytes < SHM_MIN_BYTES
    low = h.shm_free_bytes is not None and h.shm_free_bytes < SHM_MIN_BYTES // 4
    if not (small or low):
        return []
    return [Finding("shm_too_small", "warn",
                    f"/dev/shm is {'small' if small else 'nearly full'} "
                    f"({_mib(h.shm_free_bytes)} free of {_mib(h.shm_total_bytes)})",
                    "DataLoader workers hand batches to the main process through /dev/shm; "
                    "Docker's default is 64 "
                    f"MiB{' and this is a container' if h.in_container else ''}",
                    "start the container with `--shm-size=2g` (or `--ipc=host`), or use fewer "
                    "DataLoader workers (num_workers=0 avoids shared memory)",
                    "dataloader_shm_exhausted")]


def rule_num_workers(facts: DoctorFacts) -> list[Finding]:
    cpus = facts.host.cpu_usable or facts.host.cpu_logical
    if cpus is None:
        return []
    workers = min(cpus, 8)  # more rarely helps; each worker holds a copy of the dataset object
    return [Finding("num_workers", "info",
                    f"DataLoader: use num_workers <= {cpus} here (suggested {workers})",
                    f"this process may use {cpus} CPU(s); d2l's get_dataloader_workers() "
                    "hard-codes "
                    "4" + (", which makes torch warn that it exceeds the suggested maximum"
                           if cpus < 4 else ""),
                    f"DataLoader(..., num_workers={workers}); 0 is fine for small in-memory "
                    "datasets like Fashion-MNIST")]


def rule_host_probe(facts: DoctorFacts) -> list[Finding]:
    if not facts.host.errors:
        return []
    return [Finding("host_probe_partial", "info", "some host facts could not be collected",
                    "; ".join(facts.host.errors))]


RULES: tuple[Callable[[DoctorFacts], list[Finding]], ...] = (
    rule_torch_import, rule_nvml, rule_cpu_only_wheel, rule_driver_too_old, rule_gpu_arch,
    rule_gpu_lost, rule_cuda_visible_devices, rule_gpu_busy, rule_live_checks,
    rule_default_device, rule_mps, rule_shm, rule_num_workers, rule_host_probe, rule_works,
)


def diagnose(facts: DoctorFacts) -> list[Finding]:
    """Every rule's findings, worst first (a rule that crashes becomes a finding, too)."""
    findings: list[Finding] = []
    for rule in RULES:
        try:
            findings.extend(rule(facts))
        except Exception as exc:  # a rule bug must not cost the report
            findings.append(Finding("rule_failed", "warn", f"devcheck rule {rule.__name__} failed",
                                    f"{type(exc).__name__}: {exc}",
                                    "please report this devcheck bug with "
                                    "`devcheck doctor --json`"))
    try:
        findings.extend(rule_torch_cannot_use_gpu(facts, findings))
    except Exception as exc:
        findings.append(Finding("rule_failed", "warn", "devcheck rule torch_cannot_use_gpu failed",
                                f"{type(exc).__name__}: {exc}"))
    return sorted(findings, key=lambda f: _ORDER[f.severity])


def worst(findings: list[Finding]) -> Severity:
    return min((f.severity for f in findings), key=lambda s: _ORDER[s], default="ok")
