"""Which devices torch can really use, why not the others, and the ``--require`` verdict.

Pure functions of the facts and the findings :func:`devcheck.rules.diagnose.diagnose` drew
from them: the doctor's ``--require``, the pytest plugin's gate and skip reasons, and the
trainer's "why not cuda" all read the same answer from here, computed once.
"""

from __future__ import annotations

from collections.abc import Sequence

from devcheck.facts import DeviceAvailability, DoctorFacts, Finding, TorchFacts
from devcheck.rules.gpu import CUDA_REASON_IDS

MPS_REASON_IDS = ("torch_not_installed", "torch_import_failed", "torch_probe_failed",
                  "mps_not_built", "mps_unavailable")
REQUIRE_KINDS = ("cuda", "mps")


def passed_live_check(torch: TorchFacts | None, kind: str | None = None) -> list[str]:
    """Devices that passed the live check ("cpu", "cuda:0", "mps"), optionally of one kind."""
    if torch is None or not torch.imported:
        return []
    return [c.device for c in torch.live_checks
            if c.ok and (kind is None or c.device.split(":")[0] == kind)]


def mps_reason(torch: TorchFacts, os_name: str | None) -> str:
    """Why no MPS device is usable, in words (there is no MPS finding off macOS)."""
    if not torch.imported:
        return "torch could not be imported"
    if os_name not in ("Darwin", "darwin"):
        return f"MPS is Apple-only (this is {os_name or 'not macOS'})"
    if not torch.mps_built:
        return f"this torch build has no MPS support ({torch.version})"
    if not torch.mps_available:
        return "MPS is built but not available (needs macOS 12.3+ and an Apple GPU)"
    return "the MPS live check failed"


def reason_finding(kind: str, findings: Sequence[Finding]) -> Finding | None:
    """The finding that explains why no ``kind`` ("cuda" or "mps") device is usable.

    Picked by id, most specific first, never by severity alone: an unrelated warning (a
    small /dev/shm) must not become the reason, nor a CUDA finding the reason for MPS.
    """
    ids = CUDA_REASON_IDS if kind == "cuda" else MPS_REASON_IDS
    by_id: dict[str, Finding] = {}
    for f in findings:
        if f.severity in ("error", "warn", "info"):
            by_id.setdefault(f.id, f)
    return next((by_id[i] for i in ids if i in by_id), None)


def require_findings(facts: DoctorFacts, required: Sequence[str],
                     findings: Sequence[Finding]) -> list[Finding]:
    """One finding per ``--require`` kind: ok with the devices, or error with the reason.

    The reason's fix is not copied: it points at the finding that carries it, so a report
    prints each fix once.
    """
    out = []
    for kind in dict.fromkeys(required):
        passed = passed_live_check(facts.torch, kind)
        if passed:
            out.append(Finding(f"require_{kind}", "ok", f"--require {kind}: satisfied",
                               f"{', '.join(passed)} passed the live check"))
            continue
        why = reason_finding(kind, findings)
        pitfall = why.pitfall if why is not None else None
        if why is not None:
            evidence = why.title
            fix = f"see the fix of `{why.id}` below" if why.fix else "see the findings below"
        elif kind == "mps" and facts.torch is not None:
            evidence = mps_reason(facts.torch, facts.host.os_name)
            fix = ("MPS is the GPU of Apple machines (macOS 12.3+); on this machine drop "
                   "--require mps (use --require cuda on CUDA machines)")
        else:
            evidence, fix = f"torch reports no usable {kind} device", "see the findings below"
        out.append(Finding(
            f"require_{kind}", "error", f"--require {kind}: no {kind.upper()} device passed the "
            "live check", evidence, fix, pitfall))
    return out


def _cuda_reason(facts: DoctorFacts, findings: Sequence[Finding]) -> str:
    reason = reason_finding("cuda", findings)
    if reason is not None:
        return reason.title
    t = facts.torch
    if not facts.nvml.gpus and facts.nvml.available:
        return "the NVIDIA driver reports no GPU"
    return (t.cuda_unavailable_reason if t is not None else None) or "torch sees no CUDA device"


def availability(facts: DoctorFacts, findings: Sequence[Finding]) -> DeviceAvailability:
    """Usable devices and, where none of a kind is usable, the reason; pure.

    Devices count when they passed the live check; without live checks (``--no-live``),
    torch's own availability is trusted.
    """
    t = facts.torch or TorchFacts()
    if t.live_checks:
        cuda = passed_live_check(t, "cuda")
        mps = bool(passed_live_check(t, "mps"))
    else:
        cuda = [f"cuda:{d.index}" for d in t.devices] if t.cuda_available else []
        mps = t.mps_available
    names = tuple(g.name or f"GPU {g.index}" for g in facts.nvml.gpus) or tuple(
        d.name or f"cuda:{d.index}" for d in t.devices)
    return DeviceAvailability(
        usable=("cpu", *cuda, *(("mps",) if mps else ())),
        cuda_reason=None if cuda else _cuda_reason(facts, findings),
        mps_reason=None if mps else mps_reason(t, facts.host.os_name),
        torch_version=t.version, cuda_version=t.cuda_version, gpu_names=names,
        findings=tuple(f for f in findings if f.severity == "error"))
