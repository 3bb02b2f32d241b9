"""Collect every fact concurrently, diagnose once, and summarise which devices torch can use.

``import torch`` dominates the doctor's wall time (seconds), so torch is probed in a child
process (:mod:`devcheck.probe.torchproc`: a crashing torch is a fact, not the end of the
report) while this process probes the host, NVML and the wheel's files. All four go through
one timeout mechanism (:mod:`devcheck.probe.deadline`); a hung probe becomes a fact saying
so and the report still renders.

Probes are looked up as module attributes at call time (``nvml.nvml_job``,
``torchproc.torch_job``...), so tests and the pytest plugin can monkeypatch them.

The public entry point is :func:`devcheck.doctor` (in ``devcheck/__init__.py``); this module
holds what it calls (``from devcheck.checkup import run``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from devcheck.facts import (
    DeviceAvailability,
    DoctorFacts,
    DoctorResult,
    Finding,
    HostFacts,
    NvmlFacts,
    TorchFacts,
    WheelFacts,
)
from devcheck.probe import host, nvml, torchproc, wheel
from devcheck.probe.deadline import Job, run_jobs
from devcheck.rules import require

SMALL_PROBE_TIMEOUT_S = 5.0  # host, NVML, wheel: milliseconds when healthy
# Kept importable from here (their home is devcheck.rules.require).
reason_finding = require.reason_finding


def _cheap_jobs(ignore_pids: tuple[int, ...]) -> dict[str, Job[Any]]:
    return {
        "host": Job("host probe", host.probe_host, lambda why: HostFacts(errors=(why,))),
        "wheel": Job("wheel probe", wheel.probe_wheel, lambda why: WheelFacts(error=why)),
        "nvml": nvml.nvml_job(ignore_pids),
    }


def collect(*, live: bool = True, timeout_s: float = 30.0, with_torch: bool = True,
            isolate: bool | None = None) -> DoctorFacts:
    """Run all probes (torch only when ``with_torch``); never raises.

    ``timeout_s`` bounds the torch probe (import + live check); the cheap probes get
    ``min(timeout_s, 5)`` each, counted from the same start. ``isolate``: probe torch in a
    child process (True), or in this one (False: no protection from a crashing torch). The
    default isolates, except a ``live=False`` probe where torch is already imported here
    (the trainer's case: nothing left to crash, and a child would import torch again).
    """
    small = min(timeout_s, SMALL_PROBE_TIMEOUT_S)
    jobs: dict[str, Job[Any]] = {}
    timeouts = {"host": small, "wheel": small, "nvml": small}
    if with_torch:  # first: importing torch is the long pole, the others hide behind it
        in_process = (not live and "torch" in sys.modules) if isolate is None else not isolate
        jobs["torch"] = torchproc.torch_job(live=live, isolate=not in_process)
        timeouts["torch"] = timeout_s
    jobs.update(_cheap_jobs(jobs["torch"].pids if "torch" in jobs else ()))
    got = run_jobs(jobs, timeouts)
    torch_facts = got.get("torch")
    assert torch_facts is None or isinstance(torch_facts, TorchFacts)
    return DoctorFacts(host=got["host"], nvml=got["nvml"], wheel=got["wheel"], torch=torch_facts)


def availability_from_facts(facts: DoctorFacts,
                            findings: Sequence[Finding] | None = None) -> DeviceAvailability:
    """Usable devices and the reason for the missing ones; pure, never raises.

    ``findings``: the facts' diagnosis when the caller already has it (it is computed here
    otherwise), so nothing diagnoses twice.
    """
    if findings is None:
        from devcheck.rules.diagnose import diagnose  # local: keeps this module's import light

        findings = diagnose(facts)
    return require.availability(facts, findings)


def mps_reason(torch_facts: TorchFacts, host_facts: HostFacts | None) -> str:
    """Why no MPS device is usable, in words (see :func:`devcheck.rules.require.mps_reason`)."""
    os_name = host_facts.os_name if host_facts is not None else sys.platform
    return require.mps_reason(torch_facts, os_name)


def run(*, live: bool = True, timeout_s: float = 30.0, require_kinds: Sequence[str] = (),
        isolate: bool | None = None) -> DoctorResult:
    """Collect, diagnose (plus the ``--require`` verdicts) and summarise; never raises."""
    from devcheck.rules.diagnose import diagnose, sort_findings

    facts = collect(live=live, timeout_s=timeout_s, isolate=isolate)
    findings = diagnose(facts)
    verdicts = require.require_findings(facts, require_kinds, findings)
    return DoctorResult(facts=facts, findings=tuple(sort_findings(findings + verdicts)),
                        availability=require.availability(facts, findings))


def device_availability(*, live: bool = True, timeout_s: float = 30.0,
                        isolate: bool | None = None) -> DeviceAvailability:
    """Probe NVML, the host and torch, then :func:`availability_from_facts`; never raises."""
    try:
        return run(live=live, timeout_s=timeout_s, isolate=isolate).availability
    except Exception as exc:  # defensive: the plugin and the trainer must get an answer
        return DeviceAvailability(cuda_reason=f"devcheck failed: {type(exc).__name__}: {exc}",
                                  mps_reason="devcheck failed",
                                  findings=(Finding("doctor_failed", "error", "devcheck failed",
                                                    f"{type(exc).__name__}: {exc}"),))


__all__ = ["DoctorResult", "NvmlFacts", "availability_from_facts", "collect",
           "device_availability", "mps_reason", "reason_finding", "run"]
