"""``devcheck doctor`` and ``devcheck gpus``: parse options, collect, diagnose, render.

No logic of its own beyond ``--require``; importing this module must not import torch
(``devcheck gpus`` never does at all).
"""

from __future__ import annotations

import os
import sys

import click

from devcheck import doctor as doctor_mod
from devcheck.facts import DoctorFacts, Finding
from devcheck.render import report
from devcheck.rules.diagnose import diagnose

_REQUIRE = ("cuda", "mps")


def _use_color(choice: bool | None) -> bool:
    if choice is not None:
        return choice
    if os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def _require_findings(facts: DoctorFacts, required: tuple[str, ...],
                      findings: list[Finding]) -> list[Finding]:
    """One finding per ``--require``: ok with the devices, or error with the reason."""
    out = []
    live = facts.torch.live_checks if facts.torch is not None else ()
    for kind in required:
        passed = [c.device for c in live if c.ok and c.device.split(":")[0] == kind]
        if passed:
            out.append(Finding(f"require_{kind}", "ok", f"--require {kind}: satisfied",
                               f"{', '.join(passed)} passed the live check"))
            continue
        why = doctor_mod.reason_finding(kind, findings)
        pitfall = why.pitfall if why is not None else None
        if why is not None:
            evidence, fix = why.title, why.fix or "see the findings above"
        elif kind == "mps" and facts.torch is not None:
            evidence = doctor_mod.mps_reason(facts.torch, facts.host)
            fix = ("MPS is the GPU of Apple machines (macOS 12.3+); on this machine drop "
                   "--require mps (use --require cuda on CUDA machines)")
        else:
            evidence, fix = f"torch reports no usable {kind} device", "see the findings above"
        out.append(Finding(
            f"require_{kind}", "error", f"--require {kind}: no {kind.upper()} device passed the "
            "live check", evidence, fix, pitfall))
    return out


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (CliRunner)
        pass


def _emit(facts: DoctorFacts, findings: list[Finding], *, as_json: bool, color: bool | None,
          command: str, title: str) -> None:
    if as_json:
        text = report.render_json(report.to_json(facts, findings, command=command))
    else:
        text = report.render_text(facts, findings, color=_use_color(color), title=title)
    try:
        click.echo(text, color=_use_color(color))
        sys.stdout.flush()
    except OSError as exc:  # a full disk, a closed pipe: say so, no traceback
        _silence_stdout()
        raise click.ClickException(
            f"could not write the report to stdout: {exc.strerror or exc}; rerun with "
            "stdout going to a terminal or a writable file") from None
    code = report.exit_code(findings)
    if code:
        raise SystemExit(code)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/doctor.md).")
@click.option("--require", "required", type=click.Choice(_REQUIRE), multiple=True,
              help="Exit 1 unless a device of this kind passes the live check (for GPU CI).")
@click.option("--no-live", is_flag=True, help="Skip the live matmul check on each device.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="Seconds allowed for the torch probe (import + live check).")
@click.option("--color/--no-color", default=None, help="Colour the text (default: on a TTY).")
def doctor(as_json: bool, required: tuple[str, ...], no_live: bool, timeout_s: float,
           color: bool | None) -> None:
    """Can torch use the GPU, and if not, why not.

    Exit codes: 0 no error findings, 1 error findings (or an unmet --require), 2 usage.
    """
    if required and no_live:
        raise click.UsageError("--require needs the live check; drop --no-live")
    facts = doctor_mod.collect(live=not no_live, timeout_s=timeout_s)
    findings = diagnose(facts)
    findings = findings + _require_findings(facts, tuple(dict.fromkeys(required)), findings)
    findings.sort(key=lambda f: ("error", "warn", "info", "ok").index(f.severity))
    _emit(facts, findings, as_json=as_json, color=color, command="doctor",
          title="Can torch use the GPU?")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/doctor.md).")
@click.option("--color/--no-color", default=None, help="Colour the text (default: on a TTY).")
def gpus(as_json: bool, color: bool | None) -> None:
    """The NVML view of the GPUs plus the torch wheel's build; never imports torch.

    Exit codes: 0 no error findings, 1 error findings, 2 usage.
    """
    facts = doctor_mod.collect(with_torch=False)
    _emit(facts, diagnose(facts), as_json=as_json, color=color, command="gpus",
          title="GPUs:")
