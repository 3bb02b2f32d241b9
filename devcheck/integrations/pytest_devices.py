"""The pytest plugin's decisions and texts, as pure functions of doctor's verdict.

Kept apart from the hooks in :mod:`devcheck.integrations.pytest_plugin` so they can be tested (and
read) without a pytest run: the header lines, which devices count as GPUs, why a marked
test skips, and why ``--devcheck-require`` fails. Imports neither torch nor the NVML bindings.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

from devcheck.render.common import wrap_paragraph

if TYPE_CHECKING:
    from devcheck.facts import DeviceAvailability, Finding, NvmlFacts, WheelFacts


def gpus_phrase(names: Sequence[str]) -> str:
    """"2 x NVIDIA H100 80GB HBM3, NVIDIA T4" from a name per GPU, order kept."""
    counts = Counter(names)
    parts = []
    for name in dict.fromkeys(names):
        parts.append(f"{counts[name]} x {name}" if counts[name] > 1 else name)
    return ", ".join(parts)


def header_line(availability: DeviceAvailability, devices: Sequence[str] | None = None,
                suffix: str = "") -> str:
    """The report's header line after doctor's live check; names where ``device`` runs.

    ``devices``: the fixture's devices when they are not all usable ones (``--only-gpu``).
    """
    a = availability
    torch = f"torch {a.torch_version}" if a.torch_version else "torch not importable"
    runtime = f"CUDA runtime {a.cuda_version}" if a.cuda_version else "no CUDA runtime"
    if a.gpu_names:
        gpus = f"GPUs: {gpus_phrase(a.gpu_names)}"
    else:
        gpus = f"GPUs: none ({a.cuda_reason})" if a.cuda_reason else "GPUs: none"
    shown = ", ".join(a.usable if devices is None else devices) or "none"
    return f"devcheck: {torch}, {runtime}, {gpus}; device fixture: {shown} (live-checked){suffix}"


def cheap_header_line(wheel: WheelFacts, nvml: NvmlFacts) -> str:
    """The header line before any probe: torch's files and NVML only, torch not imported."""
    if wheel.installed:
        torch = f"torch {wheel.version or '(version unknown)'}"
    else:
        torch = "torch not installed"
    if wheel.cuda_version:
        runtime = f"CUDA runtime {wheel.cuda_version}"
    elif wheel.hip_version:
        runtime = f"ROCm {wheel.hip_version}"
    else:
        runtime = "CPU-only build" if wheel.cpu_only else "no CUDA runtime"
    if nvml.available:
        names = [g.name or f"GPU {g.index}" for g in nvml.gpus]
        gpus = f"GPUs: {gpus_phrase(names)}" if names else "GPUs: none (NVML lists no GPU)"
    else:
        gpus = f"GPUs: none (NVML: {nvml.error or nvml.error_kind or 'not available'})"
    return f"devcheck: {torch}, {runtime}, {gpus}; devices live-checked on first use"


def fixture_devices_line(devices: Sequence[str], *, only: str | None = None,
                         reason: str | None = None) -> str:
    """After collection: where tests asking for ``device`` run ("cpu, cuda:0, cuda:1")."""
    if only == "cpu":
        return "devcheck: device fixture: cpu (--only-cpu)"
    if not devices:
        return f"devcheck: device fixture: none, its tests skip (--only-gpu): {reason}"
    suffix = " (--only-gpu)" if only == "gpu" else ""
    return f"devcheck: device fixture: {', '.join(devices)} (live-checked){suffix}"


def gpu_devices(availability: DeviceAvailability) -> list[str]:
    return [d for d in availability.usable if d != "cpu"]


def min_count_of(marker: pytest.Mark) -> int:
    value = marker.kwargs.get("min_count", marker.args[0] if marker.args else 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"@pytest.mark.{marker.name}: min_count must be a positive integer, got {value!r}; "
            f"write e.g. @pytest.mark.{marker.name}(min_count=2)"
        )
    return value


def no_gpu_reason(a: DeviceAvailability) -> str:
    cuda = a.cuda_reason or "no CUDA device passed the live check"
    if sys.platform == "darwin":
        return f"CUDA: {cuda}; MPS: {a.mps_reason or 'no MPS device passed the live check'}"
    return cuda


def skip_reason(name: str, min_count: int, availability: DeviceAvailability) -> str | None:
    """Why a test marked ``name`` (needing ``min_count`` devices) cannot run here, or None."""
    a = availability
    if name == "requires_mps":
        if "mps" in a.usable:
            return None
        return f"Requires MPS: {a.mps_reason or 'no MPS device passed the live check'}"
    if name == "requires_cuda":
        found = [d for d in a.usable if d.startswith("cuda")]
        kind, none_reason = "CUDA", a.cuda_reason or "no CUDA device passed the live check"
    else:
        found = gpu_devices(a)
        kind, none_reason = "a GPU", no_gpu_reason(a)
    if len(found) >= min_count:
        return None
    plural = "CUDA devices" if kind == "CUDA" else "GPUs"
    if not found:
        need = kind if min_count == 1 else f"{min_count} {plural}"
        return f"Requires {need}: {none_reason}"
    return f"Requires {min_count} {plural}: only {len(found)} usable ({', '.join(found)})"


def gate_failure(require: str, availability: DeviceAvailability,
                 findings: Sequence[Finding] = ()) -> list[str] | None:
    """The lines explaining why ``--devcheck-require`` fails, or None when it passes.

    ``findings``: doctor's findings; the errors and warnings among them are listed (the
    availability's own error findings when none are given).
    """
    a = availability
    if require == "cuda":
        if any(d.startswith("cuda") for d in a.usable):
            return None
        reason = a.cuda_reason or "no CUDA device passed the live check"
    else:
        if "mps" in a.usable:
            return None
        reason = a.mps_reason or "no MPS device passed the live check"
    lines = [
        f"devcheck: --devcheck-require {require}: no {require.upper()} device passed the "
        f"live check (usable here: {', '.join(a.usable)}).",
        f"  reason: {reason}",
    ]
    shown = [f for f in findings if f.severity in ("error", "warn")] or list(a.findings)
    for f in shown:
        lines.append(f"  [{f.severity}] {f.id}: {f.title}")
        for label, text in (("evidence", f.evidence), ("fix", f.fix)):
            if text:
                lines.extend(wrap_paragraph(f"{label}: {text}", first=" " * 6,
                                            rest=" " * 16))
    lines.append(
        f"  Run `devcheck doctor` for the whole report; on a runner without a GPU, drop "
        f"--devcheck-require {require}."
    )
    return lines
