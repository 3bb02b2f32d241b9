"""The lab's parent side: a pool of one zygote, timeouts, and runs turned into verdicts.

Never imports torch. The zygote is started on the first phase and reused for every
later one (torch is imported once per lab). Whatever stops the parent, an exception, a
KeyboardInterrupt, or a signal its caller turned into one, leaving the ``with Lab()``
block kills the running phase's process group and the zygote: nothing is left behind.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from devcheck.pitfalls.lab.results import (
    PhaseResult,
    RunResult,
    lab_lost,
    phase_from,
    resolve,
    start_failure,
    verdict,
)
from devcheck.probe.torchproc import last_line

_MODULE = "devcheck.pitfalls.lab"
_GRACE_S = 30.0  # beyond a phase's own timeout, before the zygote counts as hung
_START_MARGIN_S = 10.0  # beyond the phase's timeout, for the lab to start (~1.5 s when quiet)


def _kill_group(pid: int) -> None:
    """SIGKILL process group ``pid`` (POSIX); elsewhere the caller kills the process."""
    if hasattr(os, "killpg"):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Lab:
    """A pool of one zygote; use as a context manager. Never imports torch itself."""

    def __init__(self, *, mode: str | None = None,
                 start_margin_s: float = _START_MARGIN_S) -> None:
        """``mode``: "fork" (a zygote) or "spawn" (a fresh interpreter per phase); default
        ``$DEVCHECK_LAB_MODE``, else fork where it exists. ValueError names a bad one.

        The zygote's start (the interpreter, torch's import, the registry's) is bounded by
        the first phase's timeout plus ``start_margin_s``."""
        mode = mode or os.environ.get("DEVCHECK_LAB_MODE") or (
            "fork" if hasattr(os, "fork") else "spawn")
        if mode not in ("fork", "spawn") or (mode == "fork" and not hasattr(os, "fork")):
            expected = "'fork' or 'spawn'" if hasattr(os, "fork") else "'spawn' (no fork here)"
            raise ValueError(f"lab mode {mode!r} (DEVCHECK_LAB_MODE or mode=) is not one; "
                             f"expected {expected}")
        self.mode = mode
        self._start_margin_s = start_margin_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""  # read from the zygote, not yet a whole line
        self._eof = False  # the zygote's output ended
        self._broken: str | None = None
        self._phase_pid: int | None = None  # the running phase's process group, if any

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(kill=exc_type is not None)

    @property
    def broken(self) -> str | None:
        """Why the lab cannot run phases (it failed to start or died), else None."""
        return self._broken

    def _zygote(self, timeout_s: float) -> subprocess.Popen[bytes] | None:
        """The zygote, started on first use: ready within ``timeout_s`` plus the start
        margin, or ``self._broken`` says why not (and nothing is left running)."""
        if self._proc is not None or self._broken is not None:
            return self._proc
        with tempfile.TemporaryFile() as errors:
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", _MODULE, "--serve", "--parent", str(os.getpid())],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, bufsize=0,
                )
            except OSError as exc:
                self._broken = (f"could not start the lab process ({sys.executable} -m "
                                f"{_MODULE}): {exc.strerror or exc}")
                return None
            self._pending, self._eof = b"", False
            self._broken = self._await_ready(timeout_s, errors)
            if self._broken is not None:
                self.close(kill=True)
        return self._proc

    def _await_ready(self, timeout_s: float, errors: IO[bytes]) -> str | None:
        """Follow the zygote's start (see its protocol): None once it is ready, else the
        one-line reason, with the step it was in. A start that overruns is killed."""
        assert self._proc is not None
        stage: str | None = None
        deadline = time.monotonic() + timeout_s + self._start_margin_s
        while True:
            data = self._read_line(max(0.0, deadline - time.monotonic()))
            if data is None:
                break
            if data.get("ready"):
                return None
            if "failed" in data:  # an import raised; the zygote exits by itself
                self._wait_or_kill(5.0)
                return start_failure(str(data["failed"]), raised=str(data.get("error")))
            if "stage" in data:
                stage = str(data["stage"])
        if self._eof:  # it died: how, from its exit status
            returncode = self._wait_or_kill(5.0)
            return start_failure(stage, returncode=returncode, last_words=last_line(errors))
        self._proc.kill()  # it overran: no phase exists yet, the zygote is all there is
        self._proc.wait()
        return start_failure(stage, timeout_s=timeout_s, margin_s=self._start_margin_s,
                             last_words=last_line(errors))

    def _wait_or_kill(self, timeout_s: float) -> int:
        assert self._proc is not None
        try:
            return self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:  # output closed, yet still running
            self._proc.kill()
            return self._proc.wait()

    def _read_line(self, timeout_s: float) -> dict[str, Any] | None:
        """The zygote's next JSON object line; None on timeout or end of output (then
        ``self._eof``). Other lines (something printed on stdout) are skipped.

        Unbuffered reads: the "started" and result lines may arrive in one chunk, and a
        buffered reader would hide the second from ``select``.
        """
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\n" not in self._pending:
                ready, _, _ = select.select([fd], [], [],
                                            max(0.0, deadline - time.monotonic()))
                if not ready:
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._eof = True
                    return None
                self._pending += chunk
            line, _, self._pending = self._pending.partition(b"\n")
            try:
                data = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue
            if isinstance(data, dict):
                return data

    def run_phase(self, pitfall_id: str, phase: str, device: str = "auto",
                  timeout_s: float = 120.0) -> PhaseResult:
        """Run one phase of ``pitfall_id`` (a registry id, or ``module:ATTR``) in a child."""
        request = {"id": pitfall_id, "phase": phase, "device": device, "timeout_s": timeout_s}
        if self.mode == "spawn":
            return self._run_fresh(request)
        proc = self._zygote(timeout_s)
        if proc is None or proc.stdin is None:
            return PhaseResult(phase=phase, crashed=self._broken or "lab not running")
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
        except OSError:  # the zygote died between two phases
            self._broken = "the lab process exited unexpectedly"
            self.close(kill=True)
            return PhaseResult(phase=phase, crashed=self._broken)
        deadline = time.monotonic() + timeout_s + _GRACE_S
        while True:
            data = self._read_line(max(0.0, deadline - time.monotonic()))
            if data is None or "started" not in data:
                break
            self._phase_pid = int(data["started"])
        if data is None:  # the zygote died or hangs: it cannot kill the phase's group now
            returncode = None
            if self._eof:
                try:
                    returncode = proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
            self._broken = lab_lost(returncode)
            self.close(kill=True)  # the phase's group (its workers) first, then the zygote
            return PhaseResult(phase=phase, crashed=self._broken)
        self._phase_pid = None
        return phase_from(data)

    def _run_fresh(self, request: dict[str, Any]) -> PhaseResult:
        """Spawn mode: a fresh interpreter for this phase, in its own process group."""
        cmd = [sys.executable, "-m", _MODULE, "--once", request["id"], request["phase"],
               request["device"], "--parent", str(os.getpid())]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=hasattr(os, "setsid"))
        self._phase_pid = proc.pid
        try:
            out, err = proc.communicate(timeout=request["timeout_s"])
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.kill()
            proc.communicate()
            return PhaseResult(phase=request["phase"], timed_out=True,
                               timeout_s=request["timeout_s"],
                               duration_s=round(time.perf_counter() - start, 4))
        finally:
            if proc.returncode is None:  # interrupted: take the phase down with us
                _kill_group(proc.pid)
                proc.kill()
                proc.wait()
            self._phase_pid = None
        _kill_group(proc.pid)  # workers the phase left behind
        lines = out.strip().splitlines()
        try:
            return phase_from(json.loads(lines[-1]))
        except (IndexError, ValueError):
            return PhaseResult(phase=request["phase"], crashed=f"exit code {proc.returncode}",
                               output=(out + err)[-4000:])

    def close(self, *, kill: bool = False) -> None:
        """Stop the zygote: politely (end of input) or, with ``kill``, at once with the
        running phase's whole process group (the parent is being interrupted)."""
        if kill and self._phase_pid is not None:
            _kill_group(self._phase_pid)
            self._phase_pid = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if kill:  # SIGTERM first: the zygote's handler kills the phase it is running
                proc.terminate()
            elif proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=5 if kill else 10)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass


def run_pitfall(lab: Lab, pitfall_id: str, device: str = "auto",
                timeout_s: float = 120.0) -> RunResult:
    """Reproduce, and when it raised, run the fix on the same device; then the verdict."""
    pitfall = resolve(pitfall_id)
    start = time.perf_counter()
    repro = lab.run_phase(pitfall_id, "reproduce", device, timeout_s)
    fixed = None
    if not repro.skipped and repro.raised:
        fixed = lab.run_phase(pitfall_id, "fixed", repro.device or device, timeout_s)
    status, reason = verdict(pitfall, repro, fixed)
    return RunResult(id=pitfall_id, device=repro.device or device, status=status,
                     reason=reason, reproduce=repro, fixed=fixed,
                     duration_s=round(time.perf_counter() - start, 3))


def run_pitfalls(ids: list[str], device: str = "auto", timeout_s: float = 120.0,
                 *, mode: str | None = None) -> list[RunResult]:
    """Run each pitfall in one lab (torch imported once), in order."""
    with Lab(mode=mode) as lab:
        return [run_pitfall(lab, i, device, timeout_s) for i in ids]
