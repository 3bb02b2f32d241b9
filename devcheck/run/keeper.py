"""The keeper: ends ``devcheck run``'s job when devcheck itself dies (``kill -9``, OOM).

The job runs in a session of its own (so that signals reach its whole tree), which also
means that nothing ties it to devcheck: a devcheck killed by SIGKILL runs no cleanup and
the job would run on. ``PR_SET_PDEATHSIG`` on the job would stop its main process only
(and it is cleared for setuid programs). So the CLI (never a library caller) forks a tiny
*keeper* right after the job started, while devcheck is still single-threaded:

- it sits in a session of its own (terminal signals, Ctrl-C and Ctrl-Z, do not reach it),
  renamed ``devcheck-keeper``, blocked on a pipe from devcheck: no CPU while it waits;
- devcheck writes to it, 4 times a second and only when they change, the pids it sees in
  the job's tree and the orphans re-parented to it (``pids 12 34``); ``done`` when the run
  ended normally, and the keeper exits at once without touching anything;
- end of file on the pipe without ``done``, or ``PR_SET_PDEATHSIG`` (SIGUSR1, armed toward
  devcheck), means devcheck died: the keeper SIGTERMs (and SIGCONTs) the job's session,
  every process carrying the run's ``DEVCHECK_RUN_ID`` in its environment (set for the
  job only, so grandchildren that left the session and were never sampled are found
  too), every reported pid still alive with the same start time, and all of their
  descendants; SIGKILLs what is left after ``GRACE_S``; then exits.

A reported process is matched by its start time as well as its pid, so a recycled pid
is not taken for the job's (:mod:`devcheck.run.jobprocs` makes the choice). Linux only
(``/proc``, ``prctl``); elsewhere :func:`start` returns None and a ``kill -9`` of devcheck
leaves the job running, as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping

from devcheck.run.jobprocs import Tagged, read_stat, scan, select

NAME = b"devcheck-keeper"  # /proc/<pid>/comm (at most 15 bytes)
GRACE_S = 2.0  # between SIGTERM and SIGKILL
KILL_S = 1.0  # SIGKILL, again and again, until nothing is left or this passes
POLL_S = 0.05
LINE_MAX = 4000  # below PIPE_BUF: each write is a whole line or nothing
_LINUX = sys.platform.startswith("linux")


# --- pure: the protocol -------------------------------------------------------------

def encode(pids: Iterable[int]) -> list[bytes]:
    """``pids 1 2 3\\n`` lines, each short enough to be written atomically."""
    lines, words = [], [b"pids"]
    size = 4
    for pid in pids:
        word = str(int(pid)).encode()
        if size + 1 + len(word) >= LINE_MAX:
            lines.append(b" ".join(words) + b"\n")
            words, size = [b"pids"], 4
        words.append(word)
        size += 1 + len(word)
    if len(words) > 1:
        lines.append(b" ".join(words) + b"\n")
    return lines


def parse(data: bytes) -> tuple[bool, list[int], bytes]:
    """What the pipe gave: (``done`` seen, the pids reported, an unfinished last line)."""
    *lines, rest = data.split(b"\n")
    done, pids = False, []
    for line in lines:
        words = line.split()
        if words == [b"done"]:
            done = True
        elif words[:1] == [b"pids"]:
            pids += [int(w) for w in words[1:] if w.isdigit()]
    return done, pids, rest


# --- devcheck's side -------------------------------------------------------------------

class Keeper:
    """devcheck's end of the pipe. ``report`` may be called from the sampler thread."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self._fd = pid, fd
        self._last: set[int] = set()
        self._lock = threading.Lock()

    def report(self, pids: Iterable[int]) -> None:
        """Tell the keeper the pids seen now; only those new since the last call travel."""
        with self._lock:
            if self._fd < 0:
                return
            now = set(pids) - {self.pid}
            try:
                for line in encode(sorted(now - self._last)):
                    os.write(self._fd, line)
            except OSError:  # not reading (stopped: next time), or gone: nothing to tell
                return
            self._last = now

    def done(self, wait_s: float = 0.5) -> None:
        """The run ended normally: the keeper exits without touching anything."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            told = os.write(fd, b"done\n") == 5
        except OSError:
            told = False
        os.close(fd)
        if not told:  # it could not be told: it must not act on the end of the pipe
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:  # reaped already (SIGCHLD handler)
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        with contextlib.suppress(OSError):  # slow to leave: it holds nothing worth waiting for
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def _above_stdio(fd: int) -> int:
    """``fd``, or a copy of it numbered 3 or more: with devcheck's stdout closed
    (``devcheck run ... >&-``) a new pipe would otherwise take fd 1."""
    if fd > 2:
        return fd
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def start(job_pid: int, token: str | None) -> Keeper | None:
    """Fork the keeper for the job ``job_pid`` tagged with ``token``; None where it cannot
    be (not Linux, no token, threads already running, fork failed)."""
    if not _LINUX or token is None or not _single_threaded():
        return None
    job = read_stat(job_pid)
    parent = os.getpid()
    try:
        r, w = (_above_stdio(fd) for fd in os.pipe())
    except OSError:  # out of file descriptors: run without a keeper
        return None
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(r)
        os.close(w)
        return None
    if pid == 0:  # the keeper: never returns into devcheck's code
        try:
            os.close(w)
            _keep(r, mask, parent, job_pid, job.start if job else None, token)
        finally:
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(r)
    os.set_blocking(w, False)
    return Keeper(pid, w)


# --- the keeper's side -----------------------------------------------------------------

def _keep(r: int, mask: set[int | signal.Signals], parent: int, job_pid: int,
          job_start: int | None, token: str) -> None:
    import gc
    import select

    gc.disable()  # a copy of devcheck's heap: nothing of it must be finalised here
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTSTP,
                signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGCONT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()
    with contextlib.suppress(OSError), open("/proc/self/comm", "wb") as f:
        f.write(NAME)
    with contextlib.suppress(OSError):
        os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    for name in os.listdir("/proc/self/fd"):  # devcheck's files, pipes and terminal
        if int(name) > 2 and int(name) != r:
            with contextlib.suppress(OSError):
                os.close(int(name))
    wake_r, wake_w = os.pipe()  # SIGUSR1 (devcheck died) wakes the poll below
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGUSR1, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_SETMASK, set(mask) - {signal.SIGUSR1})
    from devcheck.probe.libc import set_parent_death_signal

    set_parent_death_signal(signal.SIGUSR1)
    poller = select.poll()
    poller.register(r, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    known = Known()
    buf = b""
    while os.getppid() == parent:
        ready = {fd for fd, _ in poller.poll()}
        if wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(wake_r, 512)
        if r in ready:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            done, pids, buf = parse(buf + chunk)
            if done:
                return
            known.add(pids)
    os.set_blocking(r, False)  # devcheck is gone: what did it write before it died?
    with contextlib.suppress(OSError):
        while chunk := os.read(r, 65536):
            buf += chunk
    done, pids, _ = parse(buf + b"\n")
    if done:
        return
    known.add(pids)
    end_job(job_pid, job_start, known.starts, token)


class Known:
    """The pids devcheck reported, with their start times (a recycled pid is not ours)."""

    def __init__(self) -> None:
        self.starts: dict[int, int] = {}
        self._prune_at = 4096

    def add(self, pids: Iterable[int]) -> None:
        for pid in pids:
            p = read_stat(pid)
            if p is not None and not p.zombie:
                self.starts[pid] = p.start
        if len(self.starts) >= self._prune_at:  # a long job's exited processes
            for pid, start in list(self.starts.items()):
                p = read_stat(pid)
                if p is None or p.start != start:
                    del self.starts[pid]
            self._prune_at = max(4096, 2 * len(self.starts))


def end_job(job_pid: int, job_start: int | None, known: Mapping[int, int], token: str,
            grace_s: float = GRACE_S, kill_s: float = KILL_S) -> int:
    """SIGTERM (and SIGCONT, for a stopped job) everything of the job, SIGKILL what is left
    after ``grace_s``; returns how many processes were signalled."""
    tagged = Tagged(token)
    spare = {os.getpid()}
    signalled: set[tuple[int, int]] = set()

    def victims() -> dict[int, int]:
        procs = scan()
        chosen = select(procs, job_pid=job_pid, job_start=job_start, known=known,
                        marked=lambda pid: tagged.has(pid, procs[pid]), spare=spare)
        return {pid: procs[pid].start for pid in chosen}

    deadline = time.monotonic() + grace_s
    left = victims()
    while left:
        for pid, start in left.items():
            if (pid, start) not in signalled:
                signalled.add((pid, start))
                for sig in (signal.SIGTERM, signal.SIGCONT):
                    with contextlib.suppress(OSError):
                        os.kill(pid, sig)
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
        left = victims()
    deadline = time.monotonic() + kill_s
    while left and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(POLL_S)
        left = victims()
    return len(signalled)
