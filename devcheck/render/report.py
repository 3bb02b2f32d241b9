"""Renderings: the same facts and findings as text, as JSON, and as an exit code.

Nothing here gathers facts or decides severities; the CLI picks a rendering. The JSON
layout is a documented interface (docs/doctor.md): keys are added, never renamed, and
``schema_version`` changes only on an incompatible change.
"""

from __future__ import annotations

import json
import math
import textwrap
from typing import Any

import click

from devcheck.facts import DoctorFacts, Finding, GpuFacts, Severity

SCHEMA_VERSION = 1
EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2
_MARK: dict[Severity, tuple[str, str]] = {
    "ok": ("ok", "green"), "info": ("info", "cyan"), "warn": ("warn", "yellow"),
    "error": ("ERROR", "red"),
}
MiB = 1024**2
WIDTH = 100


def exit_code(findings: list[Finding]) -> int:
    """0 when no finding is an error, 1 otherwise (2 is click's, for usage errors)."""
    return EXIT_ERRORS if any(f.severity == "error" for f in findings) else EXIT_OK


def usable_cuda(facts: DoctorFacts) -> list[str]:
    """CUDA devices that passed the live check (the meaning of ``--require cuda``)."""
    if facts.torch is None:
        return []
    return [c.device for c in facts.torch.live_checks if c.ok and c.device.startswith("cuda")]


def usable_devices(facts: DoctorFacts) -> list[str]:
    if facts.torch is None or not facts.torch.imported:
        return []
    return [c.device for c in facts.torch.live_checks if c.ok]


def answer(facts: DoctorFacts, findings: list[Finding]) -> str:
    """One line answering "can torch use my GPU?" (or, for ``gpus``, "does NVML see one?")."""
    # The cause, not the --require verdict that merely repeats it.
    blockers = [f for f in findings
                if f.severity in ("error", "warn") and not f.id.startswith("require_")]
    if facts.torch is None:
        n = facts.nvml
        if n.available:
            return f"NVML sees {len(n.gpus)} GPU(s), driver {n.driver_version}"
        why = next((f.title for f in blockers), n.error or "NVML unavailable")
        return f"NVML sees no GPU: {why}"
    cuda = usable_cuda(facts)
    if cuda:
        return f"yes: torch computes on {', '.join(cuda)}"
    t = facts.torch
    if t.cuda_available and not t.live_checks:
        return f"torch sees {t.device_count} CUDA device(s) (not live-checked)"
    if any(c.device == "mps" and c.ok for c in t.live_checks):
        return "yes: torch computes on mps (Apple GPU)"
    why = next((f.title for f in blockers), t.cuda_unavailable_reason or "no GPU found")
    return f"no GPU: {why}; torch uses the CPU" if t.imported else f"no: {why}"


def to_json(facts: DoctorFacts, findings: list[Finding], *, command: str,
            extra_findings: list[Finding] | None = None) -> dict[str, Any]:
    """The documented JSON document (see docs/doctor.md for every key)."""
    all_findings = list(findings) + list(extra_findings or [])
    nvml = facts.nvml.to_dict()
    gpus = nvml.pop("gpus")
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "summary": {
            "answer": answer(facts, all_findings),
            "usable_devices": usable_devices(facts),
            "cuda_usable": usable_cuda(facts),
            "errors": sum(f.severity == "error" for f in all_findings),
            "warnings": sum(f.severity == "warn" for f in all_findings),
            "exit_code": exit_code(all_findings),
        },
        "host": facts.host.to_dict(),
        "nvml": nvml,
        "gpus": gpus,
        "wheel": facts.wheel.to_dict(),
        "torch": facts.torch.to_dict() if facts.torch is not None else None,
        "findings": [f.to_dict() for f in all_findings],
    }


def _finite(value: Any) -> Any:
    """NaN/Infinity (a GPU computing garbage) as null: they are not JSON, and jq rejects them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def render_json(document: dict[str, Any]) -> str:
    """Strict RFC 8259 JSON in every failure mode (the evidence text keeps the NaN)."""
    return json.dumps(_finite(document), indent=2, sort_keys=False, default=str,
                      allow_nan=False)


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, **kw: Any) -> str:
        return click.style(text, **kw) if self.color else text


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"


def _cudnn(version: int | None) -> str:
    """cuDNN's integer version as text: 92400 -> "9.24.0" (cuDNN 9+), 8902 -> "8.9.2"."""
    if not version:
        return "-"
    if version >= 90000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


def _wrap(line: str) -> list[str]:
    """Long fact lines wrap under their own indent, so the report reads in 100 columns."""
    if len(click.unstyle(line)) <= WIDTH:
        return [line]
    indent = " " * (len(line) - len(line.lstrip()))
    return textwrap.wrap(line, width=WIDTH, subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False)


def _gpu_line(g: GpuFacts, s: _Style) -> str:
    if g.error is not None:
        return f"  [{g.index}] " + s(f"not usable: {g.error}", fg="red")

    def opt(value: Any, unit: str) -> str:
        return "n/a" if value is None else f"{value:.0f}{unit}" if isinstance(value, float) \
            else f"{value}{unit}"

    mem = (f"{(g.memory_used_bytes or 0) // MiB:,} / {(g.memory_total_bytes or 0) // MiB:,} MiB"
           if g.memory_total_bytes is not None else "memory n/a")
    procs = " ".join(f"{p.name or '?'}/{p.pid}("
                     + (f"{p.used_memory_bytes // MiB}M" if p.used_memory_bytes is not None
                        else "?") + ")" for p in g.processes)
    return (f"  [{g.index}] {s(g.name or '?', bold=True)}  CC {g.compute_capability or '?'} | "
            f"{opt(g.temperature_c, ' C')}, {opt(g.utilization_gpu_pct, ' %')} | {mem} | "
            f"{opt(g.power_draw_w, ' W')} / {opt(g.power_limit_w, ' W')}"
            + (f" | {procs}" if procs else ""))


def _facts_lines(facts: DoctorFacts, s: _Style) -> list[str]:
    h, n, w, t = facts.host, facts.nvml, facts.wheel, facts.torch
    where = h.container_kind if h.in_container else ("WSL" if h.is_wsl else None)
    lines = [s("Host", bold=True),
             f"  {h.os_name} {h.os_release or ''} {h.machine or ''}"
             + (f" ({where})" if where else "") + f", Python {h.python_version}",
             f"  CPUs {h.cpu_usable or '?'} usable / {h.cpu_logical or '?'} logical / "
             f"{h.cpu_physical or '?'} physical; RAM {_gib(h.ram_available_bytes)} free of "
             f"{_gib(h.ram_total_bytes)}; /dev/shm {_gib(h.shm_total_bytes)}"]
    if h.env:
        lines.append("  " + " ".join(f"{k}={v!r}" for k, v in sorted(h.env.items())))
    lines.append(s("NVIDIA driver (NVML)", bold=True))
    if n.available:
        lines.append(f"  driver {n.driver_version or '?'}, supports CUDA "
                     f"{n.cuda_driver_version or '?'}; {len(n.gpus)} GPU(s)")
        lines.extend(_gpu_line(g, s) for g in n.gpus)
    else:
        lines.append(f"  not available: {n.error}")
    lines.append(s("torch", bold=True))
    if w.installed:
        build = (f"CUDA {w.cuda_version}" if w.cuda_version else
                 f"ROCm {w.hip_version}" if w.hip_version else "CPU-only")
        lines.append(f"  wheel {w.version} ({build}) at {w.location}")
    else:
        lines.append(f"  wheel: {w.error or 'not installed'}")
    if t is not None:
        if not t.imported:
            lines.append("  " + s(f"import failed: {t.import_error or t.error}", fg="red"))
        else:
            lines.append(f"  imported {t.version} in {t.import_seconds or 0:.2f}s; cuDNN "
                         f"{_cudnn(t.cudnn_version)}; arch {' '.join(t.arch_list) or '-'}")
            avail = f"cuda.is_available() = {t.cuda_available}"
            if not t.cuda_available and t.cuda_unavailable_reason:
                avail += f" ({t.cuda_unavailable_reason})"
            lines.append(f"  {avail}; default device {t.default_device}; "
                         f"mps available = {t.mps_available}")
            for d in t.devices:
                lines.append(f"  cuda:{d.index} {d.name} CC {d.capability}, "
                             f"{_gib(d.memory_total_bytes)}")
            for c in t.live_checks:
                took = f"{c.seconds * 1000:.1f} ms" if c.seconds is not None else "-"
                mark = s("ok", fg="green") if c.ok else s("FAILED", fg="red")
                lines.append(f"  live check {c.device}: {mark} ({took})"
                             + (f" {c.error}" if c.error else ""))
    return lines


def render_finding(f: Finding, s: _Style) -> list[str]:
    label, colour = _MARK[f.severity]
    lines = [f"  {s(f'[{label}]', fg=colour, bold=f.severity == 'error')} {f.title}  ({f.id})"]
    for name, text in (("why", f.evidence), ("fix", f.fix)):
        if text:
            lines.append(textwrap.fill(text, width=WIDTH, initial_indent=f"      {name}: ",
                                       subsequent_indent=" " * 11, break_long_words=False,
                                       break_on_hyphens=False))
    if f.pitfall:
        lines.append(f"      see: devcheck pitfalls show {f.pitfall}")
    return lines


def render_text(facts: DoctorFacts, findings: list[Finding], *, color: bool = False,
                title: str = "Can torch use the GPU?") -> str:
    """The human report: the answer first, then the facts, then findings worst first."""
    s = _Style(color)
    lines = [f"{s(title, bold=True)} {answer(facts, findings)}", ""]
    for line in _facts_lines(facts, s):
        lines.extend(_wrap(line))
    lines.extend(["", s("Findings", bold=True)])
    for f in findings:
        lines.extend(render_finding(f, s))
    code = exit_code(findings)
    lines.append("")
    lines.append(f"exit {code}: " + ("error findings above" if code else "no error findings"))
    return "\n".join(lines)
