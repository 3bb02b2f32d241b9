"""``devcheck doctor`` and ``devcheck gpus``: parse options, collect, diagnose, render.

No logic of its own (the ``--require`` verdict is a rule: :mod:`devcheck.rules.require`);
importing this module must not import torch (``devcheck gpus`` never does at all, and the
doctor asks torch in a child process).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from devcheck.checkup import collect, run
from devcheck.cli.params import FiniteFloat, ensure_stdout
from devcheck.facts import DoctorFacts, Finding
from devcheck.rules.diagnose import diagnose
from devcheck.rules.require import REQUIRE_KINDS

MAX_TIMEOUT_S = 3600.0  # an hour: beyond that a probe is hung, not slow


def _use_color(choice: bool | None) -> bool:
    if choice is not None:
        return choice
    if os.environ.get("NO_COLOR"):
        return False
    stdout = sys.stdout
    return stdout is not None and stdout.isatty()


def _check_stdout() -> None:
    """Fail before probing when there is nowhere to print (``devcheck doctor >&-``)."""
    ensure_stdout("the report", "devcheck doctor > report.txt")


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (CliRunner)
        pass


def _render(facts: DoctorFacts, findings: Sequence[Finding], *, fmt: str, color: bool,
            command: str, title: str) -> str:
    if fmt == "json":
        from devcheck.render.json import render_json, to_json

        return render_json(to_json(facts, findings, command=command))
    if fmt == "markdown":
        from devcheck.render.markdown import render_markdown

        return render_markdown(facts, findings, command=command, title=title)
    from devcheck.render.text import render_text

    return render_text(facts, findings, color=color, title=title)


def _emit(facts: DoctorFacts, findings: Sequence[Finding], *, fmt: str, color: bool | None,
          command: str, title: str) -> None:
    from devcheck.render.common import exit_code

    use_color = _use_color(color) and fmt == "text"
    text = _render(facts, findings, fmt=fmt, color=use_color, command=command, title=title)
    try:
        click.echo(text, color=use_color)
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError) as exc:  # a full disk, a closed pipe
        _silence_stdout()
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.ClickException(
            f"could not write the report to stdout: {why}; rerun with stdout going to a "
            "terminal or a writable file") from None
    unmet = [f for f in findings if f.id.startswith("require_") and f.severity == "error"]
    if unmet:  # CI logs show stderr: the verdict in one line, whatever the format on stdout
        click.echo("Error: " + "; ".join(f"{f.title} ({f.evidence})" for f in unmet)
                   + "; the report above says why and how to fix it", err=True)
    code = exit_code(findings)
    if code:
        raise SystemExit(code)


def _format(as_json: bool, markdown: bool) -> str:
    if as_json and markdown:
        raise click.UsageError("--json and --markdown were both given; pick one")
    return "json" if as_json else "markdown" if markdown else "text"


_JSON_HELP = "Print the JSON document (docs/doctor.md)."
_MARKDOWN_HELP = ("Print a Markdown report to paste into a bug report (summary table, "
                  "findings, all facts in a <details> block).")


@click.command()
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.option("--markdown", is_flag=True, help=_MARKDOWN_HELP)
@click.option("--require", "required", type=click.Choice(REQUIRE_KINDS), multiple=True,
              help="Exit 1 unless a device of this kind passes the live check (for GPU CI).")
@click.option("--no-live", is_flag=True, help="Skip the live matmul check on each device.")
@click.option("--timeout", "timeout_s", type=FiniteFloat(0, MAX_TIMEOUT_S, low_open=True),
              default=30.0, show_default=True, metavar="SECONDS",
              help="Seconds allowed for the torch probe (import + live check), in (0, 3600].")
@click.option("--color/--no-color", default=None, help="Colour the text (default: on a TTY).")
def doctor(as_json: bool, markdown: bool, required: tuple[str, ...], no_live: bool,
           timeout_s: float, color: bool | None) -> None:
    """Can torch use the GPU, and if not, why not.

    Exit codes: 0 no error findings, 1 error findings (or an unmet --require), 2 usage.
    """
    fmt = _format(as_json, markdown)
    if required and no_live:
        raise click.UsageError("--require needs the live check; drop --no-live")
    _check_stdout()
    result = run(live=not no_live, timeout_s=timeout_s, require_kinds=required,
                            isolate=True)
    _emit(result.facts, result.findings, fmt=fmt, color=color, command="doctor",
          title="Can torch use the GPU?")


@click.command()
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.option("--markdown", is_flag=True, help=_MARKDOWN_HELP)
@click.option("--color/--no-color", default=None, help="Colour the text (default: on a TTY).")
@click.option("--watch", is_flag=True,
              help="Refresh until Ctrl-C; with --json, a JSONL stream (docs/run.md).")
@click.option("-i", "--interval", "interval_s", type=FiniteFloat(0.05, 3600.0), default=None,
              help="Seconds between refreshes with --watch.  [default: 1]")
def gpus(as_json: bool, markdown: bool, color: bool | None, watch: bool,
         interval_s: float | None) -> None:
    """The NVML view of the GPUs plus the torch wheel's build; never imports torch.

    Exit codes: 0 no error findings (--watch: 0 when ended by Ctrl-C), 1 error findings,
    2 usage.
    """
    if interval_s is not None and not watch:
        raise click.UsageError(f"-i/--interval {interval_s:g} needs --watch (devcheck gpus "
                               f"--watch -i {interval_s:g})")
    if watch:
        if markdown:
            raise click.UsageError("--markdown cannot be combined with --watch; use --json "
                                   "for a stream, or drop --watch for a Markdown report")
        from devcheck.cli.run import watch_gpus

        watch_gpus(interval_s if interval_s is not None else 1.0, as_json)
        return
    fmt = _format(as_json, markdown)
    _check_stdout()
    facts = collect(with_torch=False)
    _emit(facts, diagnose(facts), fmt=fmt, color=color, command="gpus", title="GPUs:")
