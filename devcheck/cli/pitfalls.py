"""``devcheck pitfalls``: parse, call, render. No torch here (the lab's children load it).

Exit codes:
  pitfalls run   0 every run passed or was skipped, 1 a run failed, 2 usage (unknown id,
                 bad --device or --timeout), 128+N stopped by signal N (130 for Ctrl-C)
  list / show    0, or 2 for an unknown id
"""

from __future__ import annotations

import json
import re
import signal
import sys
import textwrap
import time
from typing import Any

import click

from devcheck import pitfalls as registry
from devcheck.cli.params import FiniteFloat
from devcheck.pitfalls import Pitfall
from devcheck.stopsignals import stop_signals_raise

_WIDTH = 100
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
MAX_TIMEOUT_S = 86400.0  # a day per phase: beyond that a number is a typo


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, _WIDTH, initial_indent=indent, subsequent_indent=indent)


def _code(code: str, indent: str) -> str:
    return textwrap.indent(code.strip(), indent)


def _pitfall_or_usage(pitfall_id: str) -> Pitfall:
    try:
        return registry.get(pitfall_id)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="ID") from None


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--device``: checked before anything runs (``cuda:-1`` and ``cuda:x`` are typos)."""
    if not _DEVICE.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a device; expected auto, cpu, cuda, "
                                 "cuda:N (N = 0, 1, ...) or mps")
    return value


# ------------------------------------------------------------------ pitfalls group


@click.group()
def pitfalls() -> None:
    """Reproduce, explain and fix device pitfalls (runs use a subprocess per phase)."""


@pitfalls.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(as_json: bool) -> None:
    """Every known pitfall: id, needs, reproducible here?, title."""
    from devcheck.probe.devices import probe_machine
    from devcheck.rules.pitfalls import reproducible_here

    machine = probe_machine()
    rows: list[dict[str, Any]] = []
    for p in registry.all_pitfalls():
        ok, why = reproducible_here(p, machine)
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
        click.echo(json.dumps({**p.to_dict(), "related": list(p.related)}, indent=2))
        return
    click.echo(f"{p.id}: {p.title}\nneeds: {', '.join(p.needs)}\n\nSymptoms (known forms):")
    for s in p.symptoms:
        first = s.example.strip().splitlines()[0]
        click.echo(f"  - {first}" + (f"   [{s.variant}]" if s.variant else ""))
    click.echo("\nWhy:\n" + _wrap(p.mechanism, "  "))
    click.echo(f"{p.source_label}:\n" + _wrap(p.source, "  "))
    click.echo("\nFix, best first:")
    for i, f in enumerate(p.fixes, 1):
        click.echo(f"  {i}. {f.title}\n{_code(f.code, '       ')}")
    for w in p.warnings:
        click.echo("\nWatch out:\n" + _wrap(w, "  "))
    if p.cpu_note:
        click.echo("\nNote: " + p.cpu_note)
    click.echo(f"\nReproduce: devcheck pitfalls run {p.id}")
    for other in p.related:  # pitfalls often confused with this one
        click.echo(f"See also:  devcheck pitfalls show {other}   ({registry.get(other).title})")


def _phase_line(label: str, phase: Any) -> str:
    if phase is None:
        return f"  {label:10} not run"
    if phase.skipped:
        return f"  {label:10} skipped: {phase.skipped}"
    if phase.timed_out or phase.crashed:
        from devcheck.pitfalls.lab import describe

        return f"  {label:10} {describe(phase).removeprefix(phase.phase + ' ')}"
    if phase.raised:
        lines = phase.message.strip().splitlines() or [""]
        last = lines[-1] if len(lines) > 1 else ""
        text = f"  {label:10} raised {phase.exc_type}: {lines[0][:160]}"
        if last and last != lines[0]:
            text += f"\n  {'':10} ... {last[:160]}"
        return text + f"  ({phase.duration_s:.2f} s)"
    return f"  {label:10} succeeded: {phase.value or 'ok'}  ({phase.duration_s:.2f} s)"


def _sweep(ids: list[str], device: str, timeout_s: float,
           ) -> tuple[list[Any], tuple[int, str] | None, str | None]:
    """Run ``ids`` in one lab; on SIGINT/SIGTERM/SIGHUP stop at once (the lab kills the
    running phase's process group) and return what finished, with (signal, id running),
    and why the lab broke (it failed to start or died: every later run failed so)."""
    from devcheck.pitfalls import lab

    results: list[Any] = []
    current = ids[0]
    try:
        the_lab = lab.Lab()
    except ValueError as exc:  # a bad DEVCHECK_LAB_MODE
        raise click.ClickException(f"{exc}; unset it to use the default") from None
    try:
        with stop_signals_raise(), the_lab:  # the lab kills the phase group on the way out
            for current in ids:
                results.append(lab.run_pitfall(the_lab, current, device, timeout_s))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (stopsignals.Stopped)
        return results, (int(getattr(exc, "signum", signal.SIGINT)), current), the_lab.broken
    return results, None, the_lab.broken


def _render_one(r: Any) -> None:
    click.echo(f"{r.id} on {r.device}")
    click.echo(_phase_line("reproduce", r.reproduce))
    if r.reproduce and r.reproduce.raised:
        own = registry.get(r.id).matches_symptom(r.reproduce.error_text)
        click.echo(f"  {'':10} {'matches' if own else 'does NOT match'} the pitfall's "
                   "own symptom")
    click.echo(_phase_line("fixed", r.fixed))
    click.echo(f"{r.status.upper()}: {r.reason}")


@pitfalls.command("run")
@click.argument("pitfall_id", metavar="[ID]", required=False)
@click.option("--all", "run_all", is_flag=True, help="Run every pitfall (a machine sweep).")
@click.option("--device", default="auto", show_default=True, callback=_device,
              help="cpu, cuda, cuda:N, mps, or auto (the best device each pitfall supports).")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True,
              type=FiniteFloat(0, MAX_TIMEOUT_S, low_open=True),
              help="Seconds per phase before the phase (and its workers) is killed; the "
                   "lab's start (importing torch) gets as long plus 10 s.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def run_cmd(pitfall_id: str | None, run_all: bool, device: str, timeout_s: float,
            as_json: bool) -> None:
    """Run a pitfall's failing code, check its error, then run the fix.

    Ctrl-C (or SIGTERM) stops the run and every process it started; what finished is
    still reported, and the exit code is 128 + the signal's number (130 for Ctrl-C).
    """
    if run_all == (pitfall_id is not None):
        raise click.UsageError("give one pitfall ID or --all")
    ids = [p.id for p in registry.all_pitfalls()] if run_all else [
        _pitfall_or_usage(pitfall_id or "").id]
    start = time.perf_counter()
    results, stopped, broken = _sweep(ids, device, timeout_s)
    elapsed = time.perf_counter() - start
    counts = {s: sum(r.status == s for r in results) for s in ("passed", "skipped", "failed")}
    names = sorted({r.reproduce.device_name for r in results
                    if r.reproduce and r.reproduce.device_name})
    interrupted = None if stopped is None else {
        "signal": signal.Signals(stopped[0]).name, "while_running": stopped[1]}
    if as_json:
        doc: dict[str, Any] = {"device": device, "device_names": names,
                               "results": [r.to_dict() for r in results],
                               "summary": {**counts, "duration_s": round(elapsed, 3)}}
        if interrupted:
            doc["interrupted"] = interrupted
        click.echo(json.dumps(doc, indent=2))
    elif run_all:
        click.echo(f"{'ID':34} {'DEVICE':8} {'STATUS':8} {'TIME':>6}  REASON")
        for r in results:
            click.echo(f"{r.id:34} {r.device:8} {r.status:8} {r.duration_s:5.2f}s  "
                       f"{r.reason[:110]}")
        if broken:  # the table cuts the reason short: once in full
            click.echo(f"\n{broken}")
    elif results:
        _render_one(results[0])
    if not as_json and (results or not stopped):
        on = f"; ran on {', '.join(names)}" if names else ""
        click.echo(f"\n{counts['passed']} passed, {counts['skipped']} skipped, "
                   f"{counts['failed']} failed in {elapsed:.1f} s (device {device}{on})")
    if stopped is not None:
        click.echo(f"devcheck pitfalls run: stopped by {interrupted and interrupted['signal']} "
                   f"while running {stopped[1]} ({len(results)} of {len(ids)} finished); its "
                   "processes were killed, nothing is left running", err=True)
        sys.exit(128 + stopped[0])
    if counts["failed"]:
        sys.exit(1)
