"""The human report: the answer first, then the facts, then the findings worst first.

Every string that came from outside devcheck (NVML names, torch's messages, environment
values) passes :func:`devcheck.facts.printable`, so no escape code reaches the terminal
except the colours added here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from devcheck.facts import DoctorFacts, Finding, GpuFacts, Severity, printable
from devcheck.render.common import (
    WIDTH,
    MiB,
    answer,
    build_text,
    cudnn_text,
    default_device_answer,
    exit_code,
    gib,
    gpu_errors_text,
    wrap_paragraph,
)

_MARK: dict[Severity, tuple[str, str]] = {
    "ok": ("ok", "green"), "info": ("info", "cyan"), "warn": ("warn", "yellow"),
    "error": ("ERROR", "red"),
}


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, **kw: Any) -> str:
        return click.style(text, **kw) if self.color else text


def _wrap(line: str) -> list[str]:
    """Long fact lines wrap under their own indent, so the report reads in 100 columns."""
    if len(click.unstyle(line)) <= WIDTH:
        return [line]
    indent = " " * (len(line) - len(line.lstrip()))
    return wrap_paragraph(line, first="", rest=indent + "  ")


def _opt(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def gpu_line(g: GpuFacts, s: _Style | None = None) -> str:
    """One GPU, gpustat-style: name, CC, temperature, utilisation, memory, power, processes."""
    s = s or _Style(False)
    if g.error is not None:
        return f"  [{g.index}] " + s(f"not usable: {printable(g.error)}", fg="red")
    mem = (f"{(g.memory_used_bytes or 0) // MiB:,} / {(g.memory_total_bytes or 0) // MiB:,} MiB"
           if g.memory_total_bytes is not None else "memory n/a")
    procs = " ".join(f"{printable(p.name or '?')}/{p.pid}("
                     + (f"{p.used_memory_bytes // MiB}M" if p.used_memory_bytes is not None
                        else "?") + ")" for p in g.processes)
    errors = gpu_errors_text(g)
    return (f"  [{g.index}] {s(printable(g.name or '?'), bold=True)}  "
            f"CC {g.compute_capability or '?'} | "
            f"{_opt(g.temperature_c, ' C')}, {_opt(g.utilization_gpu_pct, ' %')} | {mem} | "
            f"{_opt(g.power_draw_w, ' W')} / {_opt(g.power_limit_w, ' W')}"
            + (f" | {procs}" if procs else "")
            + (" | " + s(f"NVML: {errors}", fg="yellow") if errors else ""))


def _host_lines(facts: DoctorFacts, s: _Style) -> list[str]:
    h = facts.host
    where = h.container_kind if h.in_container else ("WSL" if h.is_wsl else None)
    lines = [s("Host", bold=True),
             f"  {h.os_name} {h.os_release or ''} {h.machine or ''}"
             + (f" ({where})" if where else "") + f", Python {h.python_version}",
             f"  CPUs {h.cpu_usable or '?'} usable / {h.cpu_logical or '?'} logical / "
             f"{h.cpu_physical or '?'} physical; RAM {gib(h.ram_available_bytes)} free of "
             f"{gib(h.ram_total_bytes)}; /dev/shm {gib(h.shm_total_bytes)}"]
    if h.env:
        lines.append("  " + " ".join(f"{k}={v!r}" for k, v in sorted(h.env.items())))
    return lines


def _torch_lines(facts: DoctorFacts, s: _Style) -> list[str]:
    w, t = facts.wheel, facts.torch
    lines = [s("torch", bold=True)]
    if w.installed:
        lines.append(f"  wheel {printable(w.version or '?')} ({printable(build_text(w))}) at "
                     f"{printable(w.location or '?')}"
                     + (f" ({printable(w.error)})" if w.error else ""))
    else:
        lines.append(f"  wheel: {printable(w.error or 'not installed')}")
    if t is None:
        return lines
    if not t.imported:
        lines.append("  " + s(f"import failed: {printable(t.import_error or t.error or '?')}",
                              fg="red"))
        return lines
    lines.append(f"  imported {t.version} in {t.import_seconds or 0:.2f}s; cuDNN "
                 f"{cudnn_text(t.cudnn_version)}; arch {' '.join(t.arch_list) or '-'}")
    avail = f"cuda.is_available() = {t.cuda_available}"
    if not t.cuda_available and t.cuda_unavailable_reason:
        avail += f" ({printable(t.cuda_unavailable_reason)})"
    lines.append(f"  {avail}; default device {t.default_device}; "
                 f"mps available = {t.mps_available}")
    for d in t.devices:
        lines.append(f"  cuda:{d.index} {printable(d.name or '?')} CC {d.capability}, "
                     f"{gib(d.memory_total_bytes)}")
    for c in t.live_checks:
        took = f"{c.seconds * 1000:.1f} ms" if c.seconds is not None else "-"
        mark = s("ok", fg="green") if c.ok else s("FAILED", fg="red")
        lines.append(f"  live check {c.device}: {mark} ({took})"
                     + (f" {printable(c.error)}" if c.error else ""))
    return lines


def facts_lines(facts: DoctorFacts, s: _Style | None = None) -> list[str]:
    """The facts section (host, NVML, torch), unwrapped."""
    s = s or _Style(False)
    n = facts.nvml
    lines = _host_lines(facts, s) + [s("NVIDIA driver (NVML)", bold=True)]
    if n.available:
        count = (f"{len(n.gpus)} GPU(s)" if n.error is None or n.gpus
                 else "GPUs unknown (see below)")
        lines.append(f"  driver {printable(n.driver_version or '?')}, supports CUDA "
                     f"{n.cuda_driver_version or '?'}; {count}")
        lines.extend(gpu_line(g, s) for g in n.gpus)
        if n.error:
            lines.append("  " + s(f"NVML failed: {printable(n.error)}", fg="red"))
    else:
        lines.append(f"  not available: {printable(n.error or '?')}")
    return lines + _torch_lines(facts, s)


def render_finding(f: Finding, s: _Style | None = None) -> list[str]:
    s = s or _Style(False)
    label, colour = _MARK[f.severity]
    lines = [f"  {s(f'[{label}]', fg=colour, bold=f.severity == 'error')} "
             f"{printable(f.title)}  ({f.id})"]
    for name, text in (("why", f.evidence), ("fix", f.fix)):
        if text:
            lines.extend(wrap_paragraph(printable(text), first=f"      {name}: ",
                                        rest=" " * 11))
    if f.pitfall:
        lines.append(f"      see: devcheck pitfalls show {f.pitfall}")
    return lines


def render_text(facts: DoctorFacts, findings: Sequence[Finding], *, color: bool = False,
                title: str = "Can torch use the GPU?") -> str:
    """The human report: the answer first, then the facts, then findings worst first."""
    s = _Style(color)
    lines = [f"{s(title, bold=True)} {printable(answer(facts, findings))}"]
    default = default_device_answer(facts)
    if default is not None:
        lines.extend(_wrap(f"{s('Do new tensors go to the GPU by default?', bold=True)} "
                           f"{default}"))
    lines.append("")
    for line in facts_lines(facts, s):
        lines.extend(_wrap(line))
    lines.extend(["", s("Findings", bold=True)])
    for f in findings:
        lines.extend(render_finding(f, s))
    code = exit_code(findings)
    lines.append("")
    lines.append(f"exit {code}: " + ("error findings above" if code else "no error findings"))
    return "\n".join(lines)
