"""What every ``softmax`` command does before its work, kept apart from option parsing.

torch is imported first, as a step of its own (:func:`_import_torch`): a broken install
(a missing ``.so``, a ``SystemExit`` or ``KeyboardInterrupt`` raised by its import) is one
line naming torch and the fix. A crash in native code cannot be caught in-process: for it,
:func:`enable_faulthandler` makes the interpreter print the Python stack where it died. A
closed stdout ends the run quietly, as it ends other Unix tools (exit 141).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

import click

EXIT_CLOSED_STDOUT = 141  # 128 + SIGPIPE: what the shell reports for `yes | head -1`
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C


def start() -> str | None:
    """Import torch, then matplotlib if $MPLBACKEND is set: an unknown value is replaced
    with agg for the images; the returned line says so (None when there is nothing to say)."""
    _import_torch()
    from softmax.plot import file_backend

    return file_backend()


def stdout_closed() -> NoReturn:
    """The reader of our stdout has gone (``| head -1``): stop without a word, and point
    stdout at /dev/null so the interpreter's final flush does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. under a test runner)
        pass
    raise SystemExit(EXIT_CLOSED_STDOUT)


def _import_torch() -> None:
    """``import torch`` as the command's first step, so that a broken install is one line.

    Whatever the import raises becomes "cannot import torch (...)" and exit 1: an
    ImportError (a missing ``libcudnn.so.9``), a RuntimeError, and also a SystemExit (it
    used to end the run with exit 0 having trained nothing) or a KeyboardInterrupt raised by
    torch's own code (click said only "Aborted!"). A real Ctrl-C during the import (seconds
    on a busy machine) is told apart by a SIGINT handler of our own, and stays an interrupt
    (exit 130)."""
    if "torch" in sys.modules:
        return
    pressed: list[int] = []

    def on_sigint(signum: int, frame: Any) -> None:
        pressed.append(signum)
        raise KeyboardInterrupt

    swapped = (_in_main_thread() and signal.getsignal(signal.SIGINT)
               is signal.default_int_handler)
    if swapped:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        import torch  # noqa: F401 - the import is the step
    except BaseException as exc:  # SystemExit and KeyboardInterrupt raised by it too
        if isinstance(exc, KeyboardInterrupt) and pressed:
            raise
        raise click.ClickException(torch_import_message(exc)) from None
    finally:
        if swapped and signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _in_main_thread() -> bool:
    """Signal handlers can be set from the main thread only."""
    import threading

    return threading.current_thread() is threading.main_thread()


def torch_import_message(exc: BaseException) -> str:
    """One line: what the import raised, that the install is broken, and the fix."""
    if isinstance(exc, ModuleNotFoundError) and exc.name == "torch":
        return (f"cannot import torch: it is not installed for {sys.executable}; expected "
                f"PyTorch in this environment. Fix: pip install torch (pick the index for "
                f"your driver on https://pytorch.org/get-started/locally/)")
    from devcheck.facts import printable

    if isinstance(exc, SystemExit):
        raised = f"SystemExit({exc.code!r}) raised by its own code"
    elif isinstance(exc, KeyboardInterrupt):
        raised = "KeyboardInterrupt raised by its own code, not by Ctrl-C"
    else:
        lines = str(exc).strip().splitlines()
        raised = type(exc).__name__ + (f": {lines[0][:200]}" if lines else "")
    return (f"cannot import torch ({printable(raised)}): this torch installation is broken; "
            f"expected `import torch` to work. Fix: `devcheck doctor` shows why, and "
            f"`pip install --force-reinstall torch` usually repairs it")


def enable_faulthandler() -> None:
    """A crash in native code (a broken torch or driver segfaulting) cannot be caught: with
    faulthandler the user sees "Fatal Python error: Segmentation fault" and the Python
    stack where it died (torch/__init__.py, under _import_torch), not a bare exit 139."""
    import faulthandler

    try:
        faulthandler.enable()
    except (RuntimeError, ValueError, OSError):  # no usable stderr (2>&-): nowhere to print
        pass
