"""Run the user's command as a child: its own process group, live output, no orphans.

``devcheck run -- CMD`` must be invisible to the job: stdin and stdout are inherited (no
buffering, no reordering between stdout lines), and the exit code is the job's (a signal
N as 128+N, like a shell). Only stderr goes through a pipe, because a crash is explained
from it: a reader thread writes each chunk straight through to our stderr and keeps the
last ``tail_bytes``.

The child gets its own session (``start_new_session``) so that a signal meant for the job
reaches its whole tree, DataLoader workers included: SIGINT/SIGTERM/SIGHUP/SIGQUIT
received by devcheck are forwarded to the child's process group, and a third Ctrl-C
kills the group outright. Ctrl-Z (SIGTSTP) stops the job's group and then devcheck, and
SIGCONT (``fg``/``bg``) continues both, so shell job control works as without devcheck.

On exit the group is terminated (SIGTERM, then SIGKILL after a grace period) and, because
devcheck makes itself a *child subreaper* on Linux, grandchildren that left the group
(``setsid``, double fork) are re-parented to devcheck and killed too.
``PR_SET_PDEATHSIG`` alone would miss them. When devcheck itself is killed (SIGKILL runs
no cleanup), its keeper (:mod:`devcheck.run.keeper`, the CLI only) ends the job.

This module imports nothing heavy: the child must start within milliseconds of
``devcheck run`` starting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import IO

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
JOB_CONTROL = (signal.SIGTSTP, signal.SIGCONT)
TAIL_BYTES = 256 * 1024
TAG_VAR = "DEVCHECK_RUN_ID"  # in the job's environment: how the keeper finds what is the job's


class LaunchError(Exception):
    """The command could not be started; ``exit_code`` is the shell's (127, 126)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class JobResult:
    exit_code: int  # the job's code, 128+N when signal N ended it
    returncode: int  # Popen's (negative for a signal)
    pid: int
    duration_s: float
    stderr_tail: str
    signals_forwarded: tuple[str, ...]
    killed_leftovers: int  # processes still alive after the job's own exit


def exit_code_of(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to us instead of init (Linux >= 3.4)."""
    from devcheck.probe.libc import become_child_subreaper

    return become_child_subreaper()


class StderrTee(threading.Thread):
    """Copy a pipe to ``target_fd`` as each chunk arrives; keep the last ``limit`` bytes."""

    def __init__(self, pipe: IO[bytes], target_fd: int = 2, limit: int = TAIL_BYTES) -> None:
        super().__init__(name="devcheck-stderr-tee", daemon=True)
        self.pipe, self.target_fd, self.limit = pipe, target_fd, limit
        self.read_fd = pipe.fileno()
        self._tail = bytearray()
        self._lock = threading.Lock()

    def run(self) -> None:
        writing = True
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            if writing:
                writing = self._write(chunk)
            with self._lock:
                self._tail += chunk
                if len(self._tail) > 2 * self.limit:
                    del self._tail[:-self.limit]
        with contextlib.suppress(OSError):
            self.pipe.close()

    def _write(self, chunk: bytes) -> bool:
        view = memoryview(chunk)
        while view:
            try:
                n = os.write(self.target_fd, view)
            except InterruptedError:
                continue
            except OSError:  # our stderr closed (a pipe to `head`): keep capturing
                return False
            view = view[n:]
        return True

    def tail(self) -> str:
        with self._lock:
            data = bytes(self._tail[-self.limit:])
        return data.decode("utf-8", "replace")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _own_children() -> list[int]:
    """Our own remaining descendants (only meaningful when we are a subreaper)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process().children(recursive=True)]
    except Exception:
        return []


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
            out.add(pid)
        except ProcessLookupError:
            pass
        except PermissionError:
            out.add(pid)
    return out


def kill_leftovers(pgid: int, known: set[int] | None = None, *, own_children: bool = False,
                   grace_s: float = 2.0, spare: frozenset[int] = frozenset(),
                   tagged: Callable[[], set[int]] | None = None) -> int:
    """SIGTERM the job's group, the ``known`` pids of its tree that left the group and
    (``own_children``, in the dedicated ``devcheck run`` process only) every remaining
    descendant of ours but ``spare`` (the keeper), and the processes ``tagged`` finds
    (those carrying the run's ``DEVCHECK_RUN_ID``: an orphan re-parented to init before
    we became a subreaper has nothing else left to link it to the job); SIGKILL
    whatever outlives ``grace_s``. Returns how many processes were still alive."""

    found: set[int] = set()  # tagged processes, looked for at most every 0.25 s (/proc scan)
    scanned = [float("-inf")]

    def leftovers() -> set[int]:
        if tagged is not None and time.monotonic() - scanned[0] >= 0.25:
            found.clear()
            found.update(tagged())
            scanned[0] = time.monotonic()
        left = _alive((set(known or ()) | found) - {pgid})
        if own_children:
            left |= set(_own_children())
        return left - spare - {os.getpid()}

    left = leftovers()
    count = len(left) + (1 if _group_alive(pgid) and pgid not in left else 0)
    if not count:
        return 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 1.0)
        while time.monotonic() < deadline:
            if own_children:
                _reap()
            left = leftovers()
            if not _group_alive(pgid) and not left:
                return count
            time.sleep(0.02)
    return count


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class SignalForwarder:
    """While active, SIGINT/SIGTERM/SIGHUP/SIGQUIT go to the job's group, not to us.

    Installed *before* the child starts (a Ctrl-C in the first milliseconds is kept and
    delivered as soon as the group exists); the third SIGINT sends SIGKILL."""

    def __init__(self, on_signal: Callable[[str], None] | None = None) -> None:
        self.pgid: int | None = None
        self.on_signal = on_signal
        self.forwarded: list[str] = []
        self._pending: list[signal.Signals] = []
        self._interrupts = 0
        self._saved: dict[signal.Signals, object] = {}

    def _send(self, sig: signal.Signals) -> None:
        if self.pgid is None:
            self._pending.append(sig)
            return
        if sig == signal.SIGINT:
            self._interrupts += 1
        send = signal.SIGKILL if self._interrupts >= 3 else sig
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, send)
        name = sig.name if send == sig else f"{sig.name} (3rd: SIGKILL)"
        self.forwarded.append(name)
        if self.on_signal is not None:
            self.on_signal(name)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._send(signal.Signals(signum))

    def _job_control(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-Z stops the job's group, then us (the shell sees a stopped job); ``fg``/
        ``bg`` continue us and we continue the job."""
        if self.pgid is None:
            return
        # The job's group is orphaned (its own session), and the kernel discards SIGTSTP
        # sent to an orphaned group: SIGSTOP is what stops it.
        send = signal.SIGSTOP if signum == signal.SIGTSTP else signal.SIGCONT
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, send)
        if signum == signal.SIGTSTP:
            os.kill(os.getpid(), signal.SIGSTOP)

    def reap_orphans(self) -> None:
        """As a child subreaper we inherit the job's orphans; reap each as it exits (a
        long job spawning daemons would otherwise pile up zombies under devcheck), but
        never the job itself, which Popen.wait must collect."""
        if threading.current_thread() is not threading.main_thread() \
                or not hasattr(os, "waitid") or signal.SIGCHLD in self._saved:
            return
        self._saved[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._reap)

    def _reap(self, signum: int, frame: FrameType | None) -> None:
        while True:
            try:  # peek (WNOWAIT) at an exited child without collecting it
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except (ChildProcessError, OSError):
                return
            if info is None or info.si_pid == self.pgid:
                return  # nothing exited, or the job itself: Popen.wait's to collect
            try:
                os.waitpid(info.si_pid, os.WNOHANG)
            except ChildProcessError:
                return

    def attach(self, pgid: int) -> None:
        self.pgid = pgid
        pending, self._pending = self._pending, []
        for sig in pending:
            self._send(sig)

    def __enter__(self) -> SignalForwarder:
        if threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.signal(s, self._handler) for s in FORWARDED}
            for sig in JOB_CONTROL:
                self._saved[sig] = signal.signal(sig, self._job_control)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._saved.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._saved = {}


def tag_environment(env: dict[str, str] | None) -> tuple[dict[str, str] | None, str | None]:
    """The job's environment with ``DEVCHECK_RUN_ID`` added, and that id (Linux, where the
    keeper finds the job's processes by it, even those that left its session); elsewhere
    the environment is left alone."""
    if not sys.platform.startswith("linux"):
        return env, None
    token = os.urandom(8).hex()
    return {**(os.environ if env is None else env), TAG_VAR: token}, token


def start(argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session with stderr piped; LaunchError when it cannot."""
    try:
        return subprocess.Popen(argv, stderr=subprocess.PIPE, start_new_session=True, env=env,
                                bufsize=0)
    except FileNotFoundError:
        raise LaunchError(f"cannot run {argv[0]!r}: no such command or file (not in PATH "
                          f"{os.environ.get('PATH', '')[:120]!r}); check the name or give "
                          "its full path", 127) from None
    except PermissionError:
        raise LaunchError(f"cannot run {argv[0]!r}: permission denied (not executable); "
                          f"chmod +x it or run it through its interpreter", 126) from None
    except OSError as exc:
        raise LaunchError(f"cannot run {argv[0]!r}: {exc.strerror or exc}; check the "
                          "command", 126) from None


def supervise(proc: subprocess.Popen[bytes], *, started: float,
              forwarder: SignalForwarder | None = None, tee_target_fd: int = 2,
              job_pids: Callable[[], set[int]] | None = None,
              own_children: bool = False, spare: frozenset[int] = frozenset(),
              tagged: Callable[[], set[int]] | None = None) -> JobResult:
    """Tee stderr, forward signals and wait for the job; then leave no process behind.

    ``job_pids`` returns every pid seen in the job's tree (the sampler's record), so a
    grandchild that left the process group is found too; ``own_children`` also kills any
    descendant of this process but ``spare`` (set it only in a process that exists to run
    the job; its keeper is spared); ``tagged`` finds the processes carrying the run's id."""
    assert proc.stderr is not None
    tee = StderrTee(proc.stderr, tee_target_fd)
    proc.stderr = None  # the tee owns (and closes) the pipe now
    tee.start()
    try:
        returncode = proc.wait()
    finally:
        if proc.returncode is None:  # we are being torn down (an exception): take the job
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        duration = time.monotonic() - started
        known = job_pids() if job_pids is not None else set()
        leftovers = kill_leftovers(proc.pid, known - {proc.pid}, own_children=own_children,
                                   spare=spare, tagged=tagged)
        tee.join(5.0)
    return JobResult(exit_code=exit_code_of(returncode), returncode=returncode, pid=proc.pid,
                     duration_s=duration, stderr_tail=tee.tail(),
                     signals_forwarded=tuple(forwarder.forwarded if forwarder else ()),
                     killed_leftovers=leftovers)
