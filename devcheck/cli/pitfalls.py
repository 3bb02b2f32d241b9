"""``devcheck explain`` and ``devcheck pitfalls``: parse, call, render. No torch here.

Exit codes:
  explain        0 a pitfall matched, 1 nothing matched, 2 usage error (unreadable file)
  pitfalls run   0 every run passed or was skipped, 1 a run failed, 2 usage (unknown id)
  list / show    0, or 2 for an unknown id
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from typing import Any

import click

from devcheck import pitfalls as registry
from devcheck.pitfalls import Pitfall

_WIDTH = 100


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, _WIDTH, initial_indent=indent, subsequent_indent=indent)


def _code(code: str, indent: str) -> str:
    return textwrap.indent(code.strip(), indent)


def _pitfall_or_usage(pitfall_id: str) -> Pitfall:
    try:
        return registry.get(pitfall_id)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="ID") from None


# ------------------------------------------------------------------ "reproducible here?"


def _here() -> dict[str, Any]:
    """Cheap facts about this machine, without importing torch (or pynvml)."""
    import importlib.util
    import multiprocessing
    import platform
    import re

    from devcheck.probe.libcuda import driver_cuda_version

    cuda_build: str | None = None
    spec = importlib.util.find_spec("torch")
    if spec and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
        try:
            with open(path, encoding="utf-8") as f:
                m = re.search(r"^cuda\b[^=\n]*=\s*['\"]([\d.]+)['\"]", f.read(), re.M)
            cuda_build = m.group(1) if m else None
        except OSError:
            pass
    return {
        "torch_installed": spec is not None,
        "cuda_build": cuda_build,
        "driver": driver_cuda_version() is not None,
        "mps": sys.platform == "darwin" and platform.machine() == "arm64",
        "fork": "fork" in multiprocessing.get_all_start_methods(),
        "root": hasattr(os, "geteuid") and os.geteuid() == 0,
    }


_STATIC: dict[str, Any] = {
    "cpu_only_wheel": lambda h: "this torch build has CUDA" if h["cuda_build"] else None,
    "no_driver": lambda h: ("an NVIDIA driver is installed" if h["driver"] else
                            None if h["cuda_build"] else "this torch build is CPU-only"),
    "driver_too_old": lambda h: None if h["driver"] and h["cuda_build"] else
    "needs an NVIDIA driver and a CUDA build",
    "dataloader_shm_exhausted": lambda h: None if sys.platform.startswith("linux") else
    "needs Linux",
}


def reproducible_here(pitfall: Pitfall, here: dict[str, Any]) -> tuple[bool, str]:
    """A quick guess for ``list``; ``run`` decides for real (in a child with torch)."""
    if not here["torch_installed"]:
        return False, "torch is not installed"
    kinds = []
    for kind in pitfall.device_kinds:
        if kind == "cpu" or (kind == "cuda" and here["cuda_build"] and here["driver"]) or (
                kind == "mps" and here["mps"]):
            kinds.append(kind)
    if not kinds:
        return False, "needs " + " or ".join(pitfall.device_kinds)
    for need in ("fork", "root"):
        if need in pitfall.needs and not here[need]:
            return False, f"needs {need}"
    blocker = _STATIC.get(pitfall.id, lambda h: None)(here)
    if blocker:
        return False, blocker
    if pitfall.precondition is not None:
        return True, f"on {'/'.join(kinds)}, if this machine fits (checked when run)"
    return True, f"on {'/'.join(kinds)}"


# ------------------------------------------------------------------ pitfalls group


@click.group()
def pitfalls() -> None:
    """Reproduce, explain and fix device pitfalls (runs use a subprocess per phase)."""


@pitfalls.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(as_json: bool) -> None:
    """Every known pitfall: id, needs, reproducible here?, title."""
    here = _here()
    rows: list[dict[str, Any]] = []
    for p in registry.all_pitfalls():
        ok, why = reproducible_here(p, here)
        rows.append({"id": p.id, "title": p.title, "needs": list(p.needs),
                     "reproducible_here": ok, "here": why})
    if as_json:
        click.echo(json.dumps({"pitfalls": rows}, indent=2))
        return
    click.echo(f"{'ID':34} {'NEEDS':18} {'HERE':5} TITLE")
    for r in rows:
        click.echo(f"{r['id']:34} {','.join(r['needs']):18} "
                   f"{'yes' if r['reproducible_here'] else 'no':5} {r['title']}")
    click.echo("\nRun one: devcheck pitfalls run ID   Details: devcheck pitfalls show ID")


@pitfalls.command("show")
@click.argument("pitfall_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_cmd(pitfall_id: str, as_json: bool) -> None:
    """Symptoms, mechanism, fix and reproduction of one pitfall."""
    p = _pitfall_or_usage(pitfall_id)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    click.echo(f"{p.id}: {p.title}\nneeds: {', '.join(p.needs)}\n\nSymptoms (known forms):")
    for s in p.symptoms:
        first = s.example.strip().splitlines()[0]
        click.echo(f"  - {first}" + (f"   [{s.variant}]" if s.variant else ""))
    click.echo("\nWhy:\n" + _wrap(p.mechanism, "  "))
    click.echo("Where in torch:\n" + _wrap(p.source, "  "))
    click.echo("\nFix, best first:")
    for i, f in enumerate(p.fixes, 1):
        click.echo(f"  {i}. {f.title}\n{_code(f.code, '       ')}")
    for w in p.warnings:
        click.echo("\nWatch out:\n" + _wrap(w, "  "))
    if p.cpu_note:
        click.echo("\nNote: " + p.cpu_note)
    click.echo(f"\nReproduce: devcheck pitfalls run {p.id}")


def _phase_line(label: str, phase: Any) -> str:
    if phase is None:
        return f"  {label:10} not run"
    if phase.skipped:
        return f"  {label:10} skipped: {phase.skipped}"
    if phase.timed_out:
        return f"  {label:10} timed out"
    if phase.crashed:
        return f"  {label:10} crashed: {phase.crashed}"
    if phase.raised:
        lines = phase.message.strip().splitlines() or [""]
        last = lines[-1] if len(lines) > 1 else ""
        text = f"  {label:10} raised {phase.exc_type}: {lines[0][:160]}"
        if last and last != lines[0]:
            text += f"\n  {'':10} ... {last[:160]}"
        return text + f"  ({phase.duration_s:.2f} s)"
    return f"  {label:10} succeeded: {phase.value or 'ok'}  ({phase.duration_s:.2f} s)"


@pitfalls.command("run")
@click.argument("pitfall_id", metavar="[ID]", required=False)
@click.option("--all", "run_all", is_flag=True, help="Run every pitfall (a machine sweep).")
@click.option("--device", default="auto", show_default=True,
              help="cpu, cuda, cuda:N, mps, or auto (the best device each pitfall supports).")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True,
              help="Seconds per phase before the run is killed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def run_cmd(pitfall_id: str | None, run_all: bool, device: str, timeout_s: float,
            as_json: bool) -> None:
    """Run a pitfall's failing code, check its error, then run the fix."""
    from devcheck.pitfalls import lab

    if run_all == (pitfall_id is not None):
        raise click.UsageError("give one pitfall ID or --all")
    kind = device.split(":")[0]
    if kind not in ("auto", "cpu", "cuda", "mps"):
        raise click.BadParameter(f"{device!r}; expected auto, cpu, cuda, cuda:N or mps",
                                 param_hint="--device")
    ids = [p.id for p in registry.all_pitfalls()] if run_all else [
        _pitfall_or_usage(pitfall_id or "").id]
    start = time.perf_counter()
    results = lab.run_pitfalls(ids, device, timeout_s)
    elapsed = time.perf_counter() - start
    counts = {s: sum(r.status == s for r in results) for s in ("passed", "skipped", "failed")}
    names = sorted({r.reproduce.device_name for r in results
                    if r.reproduce and r.reproduce.device_name})
    if as_json:
        click.echo(json.dumps({"device": device, "device_names": names,
                               "results": [r.to_dict() for r in results],
                               "summary": {**counts, "duration_s": round(elapsed, 3)}},
                              indent=2))
    elif run_all:
        click.echo(f"{'ID':34} {'DEVICE':8} {'STATUS':8} {'TIME':>6}  REASON")
        for r in results:
            click.echo(f"{r.id:34} {r.device:8} {r.status:8} {r.duration_s:5.2f}s  "
                       f"{r.reason[:110]}")
    else:
        r = results[0]
        click.echo(f"{r.id} on {r.device}")
        click.echo(_phase_line("reproduce", r.reproduce))
        if r.reproduce and r.reproduce.raised:
            own = registry.get(r.id).matches_symptom(r.reproduce.error_text)
            click.echo(f"  {'':10} {'matches' if own else 'does NOT match'} the pitfall's "
                       "own symptom")
        click.echo(_phase_line("fixed", r.fixed))
        click.echo(f"{r.status.upper()}: {r.reason}")
    if not as_json:
        on = f"; ran on {', '.join(names)}" if names else ""
        click.echo(f"\n{counts['passed']} passed, {counts['skipped']} skipped, "
                   f"{counts['failed']} failed in {elapsed:.1f} s (device {device}{on})")
    if counts["failed"]:
        sys.exit(1)
