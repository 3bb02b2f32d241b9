"""Rules: facts in, findings out. Pure functions, no I/O, one rule per problem.

Each rule looks at the :class:`DoctorFacts` and returns zero or more :class:`Finding`s with
the evidence it saw and the fix. Severity policy (documented in docs/doctor.md):
``error`` means torch cannot use hardware that is there, or torch itself is broken;
``warn`` means something will bite later (or a CUDA wheel on a machine with no NVIDIA GPU);
``info`` is advice; ``ok`` is proof that something works. The driver, wheel and GPU rules
live in :mod:`devcheck.rules.gpu`; :func:`diagnose` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable

from devcheck.facts import DoctorFacts, Finding, Severity
from devcheck.probe.torchenv import LIVE_SIZE
from devcheck.rules.gpu import (
    MACHINE_CAUSES,
    Build,
    GiB,
    build_of,
    healthy_gpus,
    mib,
    rule_cpu_only_wheel,
    rule_driver_too_old,
    rule_gpu_arch,
    rule_gpu_busy,
    rule_gpu_lost,
    rule_nvml,
)
from devcheck.rules.visible import rule_cuda_visible_devices

__all__ = ["RULES", "Build", "build_of", "diagnose", "rule_cpu_only_wheel", "sort_findings",
           "rule_cuda_visible_devices", "rule_driver_too_old", "rule_gpu_arch",
           "rule_gpu_busy", "rule_gpu_lost", "rule_nvml", "worst"]

SHM_MIN_BYTES = 1 * GiB  # Docker's default is 64 MiB; a few batches of images need more
_ORDER: dict[Severity, int] = {"error": 0, "warn": 1, "info": 2, "ok": 3}


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
        if t.error is None:
            return []
        return [Finding("torch_probe_failed", "error", f"torch probe failed: {t.error}",
                        f"torch {t.version} imported, then: {t.error}",
                        "run `python -c \"import torch; print(torch.cuda.is_available())\"` to "
                        "see it for yourself; a crash or hang while initialising CUDA often "
                        "means a wedged GPU (check `nvidia-smi`, `dmesg` for Xid errors)")]
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



# --- torch and the GPUs together ---------------------------------------------------------

def rule_torch_cannot_use_gpu(facts: DoctorFacts, earlier: list[Finding]) -> list[Finding]:
    """NVML sees GPUs, the wheel has CUDA, yet torch says no, and no other rule said why."""
    t, build = facts.torch, build_of(facts)
    gpus = healthy_gpus(facts)
    if t is None or not t.imported or t.cuda_available or not gpus or not build.cuda:
        return []
    if any(f.id in MACHINE_CAUSES and f.severity in ("error", "warn") for f in earlier):
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


def _error_text(value: float | None) -> str:
    return "?" if value is None else f"{value:.2g}"


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
                                    f"(max error {_error_text(check.max_abs_error)}) in {ms}"))
    if t.cuda_available and not t.live_checks:
        findings.append(Finding("cuda_not_live_checked", "info",
                                f"torch sees {t.device_count} CUDA device(s) (not live-checked)",
                                "run without --no-live to prove they compute"))
    cpu = [c for c in t.live_checks if c.device == "cpu" and c.ok]
    if cpu:
        findings.append(Finding("cpu_ok", "ok", f"torch {t.version} computes on the CPU",
                                "matmul matched float64 math (max error "
                                f"{_error_text(cpu[0].max_abs_error)})"))
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
                    f"({mib(h.shm_free_bytes)} free of {mib(h.shm_total_bytes)})",
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
    return sort_findings(findings)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Worst first; stable, so rules' own order holds within a severity."""
    return sorted(findings, key=lambda f: _ORDER[f.severity])


def worst(findings: list[Finding]) -> Severity:
    return min((f.severity for f in findings), key=lambda s: _ORDER[s], default="ok")
