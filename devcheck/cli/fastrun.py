"""``devcheck run`` without click: the start-up budget is 0.1 s before the job starts.

Importing click costs ~35 ms, a third of that budget, for a command line that is nearly
always ``devcheck run [-i S] [--out DIR] [--json] [--no-plot] -- CMD ...``. :func:`parse`
accepts exactly the well-formed lines that click would accept with the same meaning, and
returns ``None`` for everything else (``--help``, an unknown or repeated option, a bad
value, no command), which then goes through click and gets click's messages. So there is
one behaviour and one set of errors; this module only skips an import. The click command
in :mod:`devcheck.cli.run` runs the same :func:`execute`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from devcheck.run.job import RunOutcome

INTERVAL_MIN, INTERVAL_MAX, INTERVAL_DEFAULT = 0.01, 3600.0, 0.25

_VALUED = {"--interval": "interval", "--out": "out"}  # -i: below, also as -i0.5
_FLAGS = {"--json": "json", "--no-plot": "no_plot"}


@dataclass(frozen=True)
class RunArgs:
    command: tuple[str, ...]
    interval_s: float = INTERVAL_DEFAULT
    out_dir: Path | None = None
    as_json: bool = False
    no_plot: bool = False


def _interval(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) and INTERVAL_MIN <= x <= INTERVAL_MAX else None


def parse(args: list[str]) -> RunArgs | None:
    """``args`` after ``run``; ``None`` means "let click parse it" (help, errors, oddities)."""
    seen: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            i += 1
            break
        if not tok.startswith("-") or tok == "-":
            break  # the command starts (click: no interspersed options)
        name, eq, value = tok.partition("=")
        val: str | bool
        if name in _FLAGS and not eq:
            key, val = _FLAGS[name], True
        elif name in _VALUED:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            key, val = _VALUED[name], value
        elif tok.startswith("-i") and not tok.startswith("--"):
            value = tok[2:]
            if not value:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            key, val = "interval", value
        else:
            return None  # --help, -h, unknown options, --json=x: click decides
        if key in seen:
            return None
        seen[key] = val
        i += 1
    command = tuple(args[i:])
    if not command:
        return None
    interval = INTERVAL_DEFAULT
    if "interval" in seen:
        parsed = _interval(str(seen["interval"]))
        if parsed is None:
            return None
        interval = parsed
    out: Path | None = None
    if "out" in seen:
        text = str(seen["out"])
        if not text or (os.path.exists(text) and not os.path.isdir(text)):
            return None  # click.Path(file_okay=False) words this error
        out = Path(text)
    return RunArgs(command, interval, out, bool(seen.get("json")), bool(seen.get("no_plot")))


def _fail(message: str, code: int) -> NoReturn:
    try:
        sys.stderr.write(f"Error: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    sys.exit(code)


def execute(args: RunArgs) -> NoReturn:
    """Run the job and exit with its code; errors before the start are one ``Error:`` line."""
    from devcheck.fileio import OutputError
    from devcheck.run import job as job_mod
    from devcheck.run.runner import LaunchError

    argv = list(args.command)
    try:
        folder = job_mod.prepare_out_dir(args.out_dir or job_mod.default_out_dir())
    except OutputError as exc:
        _fail(str(exc), 1)
    try:
        outcome = job_mod.run_job(argv, interval_s=args.interval_s, out_dir=folder,
                                  plot=not args.no_plot, dedicated=True)
    except LaunchError as exc:
        if args.out_dir is None:  # the default folder, made for this run: leave no trace
            with contextlib.suppress(OSError):
                folder.rmdir()
        _fail(str(exc), exc.exit_code)
    except OutputError as exc:
        _fail(str(exc), 1)
    _print(outcome, args.as_json)
    sys.exit(outcome.job.exit_code)


def _print(outcome: RunOutcome, as_json: bool) -> None:
    from devcheck.run.report import render_text

    try:
        for warning in outcome.warnings:
            sys.stderr.write(f"[devcheck] warning: {warning}\n")
        sys.stderr.write(render_text(outcome.summary, files=outcome.files) + "\n")
        sys.stderr.flush()
        if as_json:
            sys.stdout.write(outcome.summary.to_json(indent=None) + "\n")
            sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        pass  # a closed stdout/stderr must not change the job's exit code
