"""``devcheck doctor`` and ``devcheck gpus``: parse options, collect, diagnose, render.

No logic of its own beyond ``--require``; importing this module must not import torch
(``devcheck gpus`` never does at all).
"""

from __future__ import annotations

import os
import sys

import click

from devcheck import doctor as doctor_mod
from devcheck import report
from devcheck.diagnose import diagnose
from devcheck.facts import DoctorFacts, Finding

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
    blockers = [f for f in findings if f.severity in ("error", "warn")]
    for kind in required:
        passed = [c.device for c in live if c.ok and c.device.split(":")[0] == kind]
        if passed:
            out.append(Finding(f"require_{kind}", "ok", f"--require {kind}: satisfied",
                               f"{', '.join(passed)} passed the live check"))
            continue
        why = blockers[0] if blockers else None
        out.append(Finding(
            f"require_{kind}", "error", f"--require {kind}: no {kind.upper()} device passed the "
            "live check",
            why.title if why else f"torch reports no usable {kind} device",
            why.fix if why and why.fix else "see the findings above", why.pitfall if why else None))
    return out


def _emit(facts: DoctorFacts, findings: list[Finding], *, as_json: bool, color: bool | None,
          command: str, title: str) -> None:
    if as_json:
        click.echo(report.render_json(report.to_json(facts, findings, command=command)))
    else:
        click.echo(report.render_text(facts, findings, color=_use_color(color), title=title),
                   color=_use_color(color))
    sys.stdout.flush()
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
