"""The zygote: one interpreter that imports torch once and forks a fresh child per phase.

Protocol on stdin/stdout, one JSON object per line: the parent sends a request
``{"id", "phase", "device", "timeout_s"}``; the zygote answers ``{"started": PID}`` as soon
as the phase child exists (so the parent can kill its process group if it is interrupted),
then the phase's result. At the start it says ``{"stage": "torch"}`` before importing torch,
``{"stage": "lab"}`` before its own modules, then ``{"ready": true}``; an import that raises
is ``{"failed": STAGE, "error": "ImportError: ..."}`` and the zygote exits (a crash or a
hang leaves the last stage said: the parent knows which step it was in).

No orphans, whoever dies first:

- each phase child leads its own process group (its DataLoader workers join it); the
  zygote kills the whole group after the phase, on a timeout, and on SIGINT/SIGTERM/SIGHUP;
- the zygote gets SIGTERM when the parent dies (``PR_SET_PDEATHSIG`` on Linux), even by
  SIGKILL, and anywhere sees its input close while it waits for a phase;
- each phase child gets SIGKILL when the zygote dies.

The zygote never initialises CUDA (nor asks the driver anything through torch), so its
children may: fork-before-CUDA-init is safe.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys
import tempfile
import time
import traceback
from types import FrameType
from typing import IO, Any, NoReturn

_OUTPUT_TAIL = 4000  # bytes of the phase's stdout/stderr kept in its result
# (SIGHUP: the terminal went away; Windows has none, but it never runs a zygote)
_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, n))


def kill_group(pgid: int) -> None:
    """SIGKILL every process in group ``pgid``; quiet when it is already gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _child(request: dict[str, Any], result_fd: int, zygote_pid: int) -> None:
    """In the forked child: own group, death with the zygote, captured output, one phase."""
    from devcheck.pitfalls.lab.child import run_phase_here
    from devcheck.probe.libc import set_parent_death_signal

    os.setpgid(0, 0)
    set_parent_death_signal(signal.SIGKILL, parent=zygote_pid)
    # the zygote's handlers must not run here: a reproduction is an ordinary program
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    capture = tempfile.TemporaryFile()
    os.dup2(capture.fileno(), 1)
    os.dup2(capture.fileno(), 2)
    result = run_phase_here(request["id"], request["phase"], request["device"])
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    capture.seek(0, os.SEEK_END)
    capture.seek(max(0, capture.tell() - _OUTPUT_TAIL))
    result["output"] = capture.read().decode("utf-8", "replace")
    with os.fdopen(result_fd, "w") as f:
        # one line: the zygote stops reading at the newline, so workers this phase left
        # running (holding the pipe open) cannot delay the result
        f.write(json.dumps(result) + "\n")


def _read_result(fd: int, deadline: float, parent_fd: int | None) -> tuple[bytes, bool]:
    """Read the child's one-line result until ``deadline``; (data, timed_out).

    ``parent_fd`` is the zygote's input: the parent sends nothing while a phase runs, so
    it turning readable means end of input, the parent is gone (any OS, no prctl needed).
    """
    chunks: list[bytes] = []
    watched = [fd] if parent_fd is None else [fd, parent_fd]
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select(watched, [], [], left)
        if parent_fd is not None and parent_fd in ready:
            raise _ParentGone
        if ready:
            data = os.read(fd, 65536)
            chunks.append(data)
            if not data or data.endswith(b"\n"):
                return b"".join(chunks), False


class _ParentGone(Exception):
    """The zygote's input closed while a phase ran: nobody waits for the result."""


class Zygote:
    """The serving loop and the phase child it is waiting for (killed if the zygote stops)."""

    def __init__(self, stdout: IO[str], parent_fd: int | None = None) -> None:
        self.stdout = stdout
        self.parent_fd = parent_fd
        self.current: int | None = None  # the phase child's pid = its process group id

    def _send(self, message: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(message) + "\n")
        self.stdout.flush()

    def stop(self, signum: int, frame: FrameType | None = None) -> NoReturn:
        """Signal handler: take the running phase's whole group down, then exit."""
        if self.current is not None:
            kill_group(self.current)
        os._exit(128 + signum)

    def fork_phase(self, request: dict[str, Any]) -> dict[str, Any]:
        """Fork a child for one phase, wait up to its timeout, kill its group afterwards."""
        timeout_s = float(request.get("timeout_s", 120.0))
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        start = time.perf_counter()
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # child
            os.close(r)
            try:
                _child(request, w, zygote_pid)
            finally:
                os._exit(0)
        self.current = pid
        try:  # also here: the group must exist before anyone signals it
            os.setpgid(pid, pid)
        except OSError:
            pass
        os.close(w)
        self._send({"started": pid})
        try:
            data, timed_out = _read_result(r, start + timeout_s, self.parent_fd)
        except _ParentGone:
            self.stop(signal.SIGHUP)
        finally:
            os.close(r)
        if timed_out:
            kill_group(pid)
        _, status = os.waitpid(pid, 0)
        kill_group(pid)  # workers the phase left behind
        self.current = None
        elapsed = round(time.perf_counter() - start, 4)
        if timed_out:
            return {"phase": request["phase"], "timed_out": True, "timeout_s": timeout_s,
                    "duration_s": elapsed}
        try:
            result: dict[str, Any] = json.loads(data.decode("utf-8", "replace"))
            return result
        except ValueError:
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit code {os.WEXITSTATUS(status)}")
            return {"phase": request["phase"], "crashed": how, "duration_s": elapsed}

    def serve(self, stdin: IO[str]) -> None:
        for line in stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            if _asks_devices(request):
                from devcheck.probe import devices

                try:  # once, here: every later child inherits the answer
                    devices.cheap_facts()
                except Exception:  # noqa: S110  (the child asks again and reports the error)
                    pass
            self._send(self.fork_phase(request))


def _asks_devices(request: dict[str, Any]) -> bool:
    """Will this phase's child ask why an accelerator is unusable? (The doctor's cheap
    probes, NVML among them, then run once, here, before the fork.)"""
    from devcheck.pitfalls.lab.results import resolve
    from devcheck.rules.pitfalls import kinds_to_ask

    try:
        pitfall = resolve(request["id"])
    except KeyError:
        return False  # the child reports it
    return bool(kinds_to_ask(pitfall.device_kinds, request["device"]))


def _load(zygote: Zygote, stage: str, modules: tuple[str, ...]) -> None:
    """Import ``modules``, saying ``{"stage": stage}`` first so the parent knows which step
    a crash (a segfault, ``os._exit``) or a hang was in; an exception (``ImportError``,
    ``SystemExit``, ...) is reported as ``{"failed": stage, "error": ...}``, then we exit 1."""
    zygote._send({"stage": stage})
    try:
        for name in modules:
            importlib.import_module(name)
    except BaseException as exc:  # noqa: B036 - a broken torch may raise anything
        traceback.print_exc()  # the whole story, for whoever runs the lab by hand
        text = str(exc).strip() or repr(exc)
        zygote._send({"failed": stage, "error": f"{type(exc).__name__}: {text}"[:1000]})
        raise SystemExit(1) from None


def serve(stdin: IO[str], stdout: IO[str], parent: int | None = None) -> None:
    """The zygote's main: imports paid once, then one forked child per request."""
    from devcheck.probe.libc import set_parent_death_signal

    try:
        parent_fd: int | None = stdin.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file: no watching
        parent_fd = None
    zygote = Zygote(stdout, parent_fd)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, zygote.stop)
    set_parent_death_signal(signal.SIGTERM, parent=parent)

    # the import we pay once (torch._dynamo: loaded lazily by meta ops and optimizer steps)
    _load(zygote, "torch", ("torch", "torch._dynamo", "torch.utils.data"))
    _load(zygote, "lab", ("devcheck.pitfalls", "devcheck.pitfalls.lab.child"))
    try:
        zygote._send({"ready": True})
        zygote.serve(stdin)
    finally:  # any way out (a broken pipe to a dead parent, a bug): no phase outlives us
        if zygote.current is not None:
            kill_group(zygote.current)


def run_once(pitfall_ref: str, phase: str, device: str, parent: int | None) -> dict[str, Any]:
    """Spawn mode: this fresh interpreter is the phase child (the parent made its group)."""
    from devcheck.pitfalls.lab.child import run_phase_here
    from devcheck.probe.libc import SIGKILL, set_parent_death_signal

    set_parent_death_signal(SIGKILL, parent=parent)
    return run_phase_here(pitfall_ref, phase, device)
