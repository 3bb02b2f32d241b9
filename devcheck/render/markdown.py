"""The report as GitHub Markdown, to paste into a bug report.

What PyTorch's issue template asks ``collect_env`` for, plus the diagnosis: a short summary
table, the findings with their fixes, and every fact as the JSON document inside a
collapsible ``<details>`` block (so the issue stays readable and nothing is lost). Text from
outside devcheck is made printable and escaped for the Markdown context it lands in: a GPU
or process name cannot break the table or inject HTML.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from devcheck.facts import DoctorFacts, Finding, printable
from devcheck.render.common import (
    answer,
    build_text,
    default_device_answer,
    exit_code,
    gpu_errors_text,
    usable_devices,
)
from devcheck.render.json import render_json, to_json

_SEVERITY = {"error": "error", "warn": "warning", "info": "info", "ok": "ok"}


_CODE_SPAN = re.compile(r"(`[^`]*`)")


def _escape_html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _inline(text: str) -> str:
    """One line of Markdown text: printable, no raw HTML, no line breaks.

    Code spans (a fix's `command`) are kept verbatim: Markdown shows them literally, so an
    entity there would be printed as "&lt;" instead of "<".
    """
    parts = _CODE_SPAN.split(" ".join(printable(text).split()))
    return "".join(part if i % 2 else _escape_html(part) for i, part in enumerate(parts))


def _cell(text: str) -> str:
    return _inline(text).replace("|", "\\|") or " "


def _gpus(facts: DoctorFacts) -> str:
    n = facts.nvml
    if not n.available:
        return f"none seen by NVML ({n.error_kind or 'unavailable'})"
    if not n.gpus:
        return (f"unknown (NVML failed: {n.error})" if n.error
                else "none (the driver lists no GPU)")
    return ", ".join(
        f"{g.index}: {g.name or '?'}" + (f" (CC {g.compute_capability})"
                                         if g.compute_capability else "")
        + (f" ({g.error})" if g.error else "")
        + (f" (NVML: {gpu_errors_text(g)})" if g.errors else "") for g in n.gpus)


def _summary_rows(facts: DoctorFacts, findings: Sequence[Finding]) -> list[tuple[str, str]]:
    h, n, w, t = facts.host, facts.nvml, facts.wheel, facts.torch
    where = h.container_kind if h.in_container else ("WSL" if h.is_wsl else None)
    rows = [("OS", f"{h.os_name} {h.os_release or ''} {h.machine or ''}"
             + (f" ({where})" if where else "")),
            ("Python", h.python_version or "?")]
    wheel = f"{w.version or '?'} ({build_text(w)})" + (f"; {w.error}" if w.error else "")
    rows.append(("torch wheel", wheel if w.installed else w.error or "not installed"))
    if t is not None:
        rows.append(("torch import", f"ok in {t.import_seconds or 0:.2f} s" if t.imported
                     else f"failed: {t.import_error or t.error}"))
        if t.imported:
            rows.append(("cuda.is_available()", str(t.cuda_available)))
            rows.append(("default device", str(t.default_device)))
    rows.append(("NVIDIA driver",
                 f"{n.driver_version or '?'} (CUDA {n.cuda_driver_version or '?'})"
                 if n.available else f"not available: {n.error_kind or n.error}"))
    rows.append(("GPUs", _gpus(facts)))
    if t is not None:
        rows.append(("usable devices", ", ".join(usable_devices(facts)) or "none"))
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warn" for f in findings)
    rows.append(("findings", f"{errors} error(s), {warnings} warning(s)"))
    rows.append(("exit code", str(exit_code(findings))))
    return rows


def _finding(f: Finding) -> list[str]:
    lines = [f"- **{_SEVERITY[f.severity]}: {_inline(f.title)}** (`{f.id}`)"]
    for label, text in (("why", f.evidence), ("fix", f.fix)):
        if text:
            lines.append(f"  - {label}: {_inline(text)}")
    if f.pitfall:
        lines.append(f"  - see: `devcheck pitfalls show {f.pitfall}`")
    return lines


def _fence(body: str) -> str:
    """A code fence longer than any backtick run inside ``body``."""
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(facts: DoctorFacts, findings: Sequence[Finding], *, command: str,
                    title: str = "Can torch use the GPU?") -> str:
    """The Markdown report (GitHub flavour: a pipe table and a ``<details>`` block)."""
    lines = [f"### devcheck {command}", "", f"**{_inline(title)}** "
             f"{_inline(answer(facts, findings))}", ""]
    default = default_device_answer(facts)
    if default is not None:
        lines += [f"**Do new tensors go to the GPU by default?** {_inline(default)}", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in _summary_rows(facts, findings)]
    lines += ["", "#### Findings", ""]
    shown = [f for f in findings if f.severity != "ok"] or list(findings)
    for f in shown:
        lines += _finding(f)
    ok = [f for f in findings if f.severity == "ok" and f not in shown]
    if ok:
        lines.append("- ok: " + "; ".join(_inline(f.title) for f in ok))
    body = render_json(to_json(facts, findings, command=command))
    fence = _fence(body)
    lines += ["", "<details>", f"<summary>All facts (<code>devcheck {command} --json</code>)"
              "</summary>", "", f"{fence}json", body, fence, "", "</details>", ""]
    return "\n".join(lines)
