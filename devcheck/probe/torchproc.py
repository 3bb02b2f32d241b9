"""The torch probe from the outside: torch is imported in a child process, never here.

A torch whose import segfaults, calls ``os._exit`` or hangs takes the interpreter with it,
so the doctor asks torch in a child (``python -c`` running
:func:`devcheck.probe.torchenv.child_main`) and reads its JSON lines. The child reports each
stage as it reaches it, so when it dies the facts still say where: while importing torch
(``import_error``), while querying CUDA (``error``), or during one device's live check (that
device's :class:`LiveCheck` fails with the signal). The parent meanwhile probes NVML, the
host and the wheel, so the doctor costs about one ``import torch``.

The child runs the same interpreter with the parent's ``sys.path``, so it finds the same
torch and the same devcheck (an uninstalled checkout included), and the same environment
(``CUDA_VISIBLE_DEVICES`` is part of what is probed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import fields
from typing import IO, Any

from devcheck.facts import LiveCheck, TorchDevice, TorchFacts
from devcheck.probe.deadline import Job

_CHILD_CODE = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
               "from devcheck.probe.torchenv import child_main; "
               "sys.exit(child_main(sys.argv[2:]))")
STDERR_TAIL_BYTES = 4096


def facts_from_dict(data: dict[str, Any]) -> TorchFacts:
    """:class:`TorchFacts` from its ``to_dict()`` form (unknown keys ignored)."""
    known = {f.name for f in fields(TorchFacts)}
    values = {k: v for k, v in data.items() if k in known}
    values["arch_list"] = tuple(values.get("arch_list") or ())
    values["devices"] = tuple(TorchDevice(**d) for d in values.get("devices") or ())
    values["live_checks"] = tuple(LiveCheck(**c) for c in values.get("live_checks") or ())
    values["errors"] = dict(values.get("errors") or {})
    return TorchFacts(**values)


def exit_text(returncode: int | None, *, before_reporting: bool = True) -> str:
    """How the child ended, in words: "crashed with SIGSEGV (signal 11)", "exited with code 3"
    (followed by "before reporting" unless ``before_reporting`` is False)."""
    if returncode is None:
        return "did not finish"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"crashed with {name} (signal {-returncode})"
    return f"exited with code {returncode}" + (" before reporting" if before_reporting else "")


def last_line(f: IO[bytes]) -> str:
    """The last non-empty line in the final ``STDERR_TAIL_BYTES`` of ``f`` (a child's last
    words on stderr), or "" when there is none or the file cannot be read."""
    try:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - STDERR_TAIL_BYTES))
        text = f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class TorchChild:
    """One run of the torch probe in a child process; see the module docstring."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.events: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_error: str | None = None
        self._stderr = tempfile.TemporaryFile()
        self._tail: str | None = None  # set once the stderr file is closed
        self._lock = threading.Lock()

    def start(self) -> int | None:
        """Start the child now (its pid, or None when it could not start)."""
        args = [sys.executable, "-c", _CHILD_CODE, json.dumps(sys.path), "--parent",
                str(os.getpid())]
        if not self.live:
            args.append("--no-live")
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=self._stderr)
        except OSError as exc:
            self.start_error = f"could not start {sys.executable}: {exc.strerror or exc}"
            return None
        return self.proc.pid

    def run(self) -> TorchFacts:
        """Wait for the child and turn what it said into facts; never raises."""
        if self.proc is None and self.start_error is None:
            self.start()
        if self.proc is None:
            return TorchFacts(error=f"torch probe failed: {self.start_error}")
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            if isinstance(event, dict):
                with self._lock:
                    self.events.append(event)
        self.proc.wait()
        done = self._last("done")
        try:
            if done is not None:
                return facts_from_dict(done["facts"])
            return self.partial(f"the torch probe {exit_text(self.proc.returncode)}",
                                crashed=True)
        finally:
            self._close()

    def _close(self) -> None:
        """Close the pipe and the stderr file (PYTHONWARNINGS=error turns a file left to the
        garbage collector into printed 'Exception ignored' noise); the tail is kept."""
        with self._lock:
            if self._tail is None:
                self._tail = last_line(self._stderr)
            for f in (self.proc.stdout if self.proc else None, self._stderr):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass

    def kill(self) -> None:
        """Stop the child (the deadline passed); its facts come from :meth:`partial`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def _last(self, stage: str) -> dict[str, Any] | None:
        with self._lock:
            return next((e for e in reversed(self.events) if e.get("stage") == stage), None)

    def stderr_tail(self) -> str:
        """The last line the child wrote to stderr (torch's or Python's last words); under
        the lock, as :meth:`_close` may be reading and closing the file at the same time."""
        with self._lock:
            return self._tail if self._tail is not None else last_line(self._stderr)

    def partial(self, why: str, *, crashed: bool = False) -> TorchFacts:
        """The facts when the child did not finish: ``why`` placed at the stage it reached."""
        with self._lock:
            events = list(self.events)
        stages = [e.get("stage") for e in events]
        last = stages[-1] if stages else None
        tail = self.stderr_tail()
        said = f" (its last words: {tail})" if tail and crashed else ""
        if last is None:  # not even devcheck's child code ran: a broken interpreter or path
            return TorchFacts(error=f"{why} before importing torch{said}")
        if last == "import":
            if crashed:
                return TorchFacts(imported=False, import_error=f"{why} while importing torch"
                                                               f"{said}")
            return TorchFacts(error=f"{why} while importing torch")
        facts_event = self._last("facts")
        if facts_event is None:  # imported, died while asking about CUDA
            version = next((e.get("version") for e in events if e.get("stage") == "cuda"), None)
            return TorchFacts(imported=True, version=version,
                              error=f"{why} while querying CUDA (initialising CUDA){said}")
        facts = facts_from_dict(facts_event["facts"])
        checks = [LiveCheck(**e["check"]) for e in events if e.get("stage") == "check"]
        if last == "live":
            device = str(events[-1].get("device"))
            checks.append(LiveCheck(device=device, ok=False,
                                    error=f"{why} during the live check on {device}{said}"))
            return TorchFacts(**{**facts.__dict__, "live_checks": tuple(checks)})
        targets = 1 + len(facts.devices) + int(facts.mps_available)  # cpu, cuda:N, mps
        if not self.live or len(checks) >= targets:  # all work done; it died on its way out
            return TorchFacts(**{**facts.__dict__, "live_checks": tuple(checks)})
        return TorchFacts(**{**facts.__dict__, "live_checks": tuple(checks),
                             "error": f"{why} between live checks{said}"})


def torch_job(*, live: bool, isolate: bool = True) -> Job[TorchFacts]:
    """The torch probe as a job for :mod:`devcheck.probe.deadline`, already started.

    ``isolate=False`` runs it in this process (cheap where torch is already imported; no
    protection from a crash, and a hang cannot be stopped); so does an embedded Python whose
    ``sys.executable`` is empty.
    """
    if not isolate or not sys.executable:  # an embedded Python: no interpreter to start
        from devcheck.probe.torchenv import collect_torch

        return Job("torch probe", lambda: collect_torch(live),
                   lambda why: TorchFacts(error=why))
    child = TorchChild(live)
    pid = child.start()
    return Job("torch probe", child.run, child.partial, cancel=child.kill,
               pids=(pid,) if pid is not None else ())
