"""The ``devcheck`` command line.

The click group lives in :mod:`devcheck.cli.group` and is loaded on first use
(``from devcheck.cli import cli`` still works). ``main`` first offers the command line to
:mod:`devcheck.cli.fastrun`: ``devcheck run -- CMD`` with well-formed options starts the job
without importing click (~35 ms of the 0.1 s start-up budget); anything else, help and
every error included, goes through click, so there is one set of messages.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any


def main() -> None:
    try:
        argv = sys.argv[1:]
        if argv[:1] == ["run"]:
            from devcheck.cli import fastrun

            parsed = fastrun.parse(argv[1:])
            if parsed is not None:
                fastrun.execute(parsed)  # exits with the job's code
        from devcheck.cli.group import cli

        cli()
    finally:
        # The command is over (a stream that ended by itself, like `gpus --watch` without
        # NVML, included): a Ctrl-C landing while the interpreter shuts down would only print
        # "Exception ignored in threading ... KeyboardInterrupt". Only the real process
        # entry point does this; click's CliRunner calls ``cli`` and keeps its handlers.
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def __getattr__(name: str) -> Any:
    if name == "cli":
        from devcheck.cli.group import cli

        return cli
    raise AttributeError(f"module 'devcheck.cli' has no attribute {name!r}")
