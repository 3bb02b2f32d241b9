"""The C library through ctypes: the one process-control call Python's ``os`` lacks.

``prctl(PR_SET_PDEATHSIG)`` asks Linux to signal this process when its parent dies. The
pitfall lab sets it in its zygote and in each phase child, so a killed ``devcheck`` (even
by SIGKILL, which runs no cleanup) takes its reproductions with it instead of leaving
them running under init. Kept in the probe package because it is the only place that
loads native libraries.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
SIGKILL = int(getattr(signal, "SIGKILL", 9))  # Windows has no SIGKILL: callers stay portable


def set_parent_death_signal(sig: int = SIGKILL, *, parent: int | None = None) -> bool:
    """Deliver ``sig`` to this process when its parent exits; True when armed (Linux).

    ``parent`` closes the race where the parent died before the call: if that process is
    already gone, ``sig`` is sent to this one at once. Elsewhere (macOS, Windows)
    this returns False and callers rely on killing process groups instead.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(int(sig)), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent is not None and not _alive(parent):
        os.kill(os.getpid(), sig)
    return True


_TIED = ("import os, sys; from devcheck.probe.libc import set_parent_death_signal; "
          "set_parent_death_signal(int(sys.argv[2]), parent=int(sys.argv[1])); "
          "os.execvp(sys.argv[3], sys.argv[3:])")


def tied_command(argv: list[str], sig: int) -> list[str]:
    """``argv`` started so that it gets ``sig`` when this process dies (even by SIGKILL).

    For commands that this process cannot ask to arm ``PR_SET_PDEATHSIG`` themselves
    (torchrun): a small Python arms it, then execs ``argv`` (the setting survives exec).
    ``preexec_fn`` would do the same without the extra interpreter, but it may deadlock in a
    process with threads. Elsewhere than Linux, ``argv`` unchanged."""
    if not sys.platform.startswith("linux") or not sys.executable:
        return list(argv)
    return [sys.executable, "-c", _TIED, str(os.getpid()), str(int(sig)), *argv]


def become_child_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process instead of init (Linux >= 3.4),
    so ``devcheck run`` can find and end what a job left behind; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    """Does ``pid`` still exist? (Not "is it my parent": a wrapper may sit in between.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
