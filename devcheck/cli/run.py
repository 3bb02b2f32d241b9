"""``devcheck run [OPTIONS] -- COMMAND [ARGS...]``: run a job and say how it used the GPU.

Thin: parse, call :func:`devcheck.run.job.run_job`, print. The job's own stdout stays
clean (``devcheck run -- cmd > out.txt`` writes what ``cmd`` alone would): the summary
goes to stderr, and ``--json`` prints the summary document as the last line of stdout.
Exit code: the job's (128+N when signal N ended it); 127/126 when the command cannot be
started; 2 for usage errors; 1 when an output folder cannot be created.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from devcheck.cli import fastrun
from devcheck.cli.fastrun import INTERVAL_DEFAULT, INTERVAL_MAX, INTERVAL_MIN
from devcheck.cli.params import FiniteFloat


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("--interval", "-i", "interval_s", type=FiniteFloat(INTERVAL_MIN, INTERVAL_MAX),
              default=INTERVAL_DEFAULT,
              show_default=True, help="Seconds between samples (0.25 = 4 Hz).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for timeline.jsonl, summary.json, timeline.png "
                   "[default: runs/devcheck-run-<time>/].")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary as one JSON line at the end of stdout.")
@click.option("--no-plot", is_flag=True, help="Do not draw timeline.png (skips matplotlib).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(interval_s: float, out_dir: Path | None, as_json: bool, no_plot: bool,
        command: tuple[str, ...]) -> None:
    """Run COMMAND, sample its GPUs and processes, and explain how it used them.

    \b
    devcheck run -- python train.py --epochs 3
    devcheck run -i 1 --out runs/exp1 -- bash train.sh

    Exit code: the command's own (128+N for signal N).
    """
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise click.UsageError("no command given: devcheck run [OPTIONS] -- COMMAND [ARGS...]")
    fastrun.execute(fastrun.RunArgs(tuple(argv), interval_s, out_dir, as_json, no_plot))


def watch_gpus(interval_s: float, as_json: bool) -> None:
    """``devcheck gpus --watch``: print frames until Ctrl-C (exit 0) or a closed pipe."""
    from devcheck.run.gpuwatch import frames

    tty = sys.stdout.isatty() and not as_json
    try:
        for frame in frames(interval_s, as_json, tty=tty):
            click.echo(frame)  # click flushes: a JSONL reader gets each line at once
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `devcheck gpus --watch --json | head -3`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit flush
        except OSError:
            pass
