"""Runs pitfall reproductions in isolated processes, paying torch's import once.

A *zygote* interpreter imports torch (and the registry) once, then forks one fresh child
per phase (``reproduce`` or ``fixed``): each run starts from the same clean state, cannot
leak a default device, a mount namespace or a poisoned CUDA context into the next, and is
killed with its whole process group when it overruns its timeout. The zygote never
initialises CUDA, so forked children may (fork-before-CUDA-init is safe). Where ``fork``
does not exist (Windows) or ``DEVCHECK_LAB_MODE=spawn`` is set, each phase runs in a fresh
interpreter instead: slower, equally isolated.
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
import traceback
from dataclasses import dataclass
from typing import IO, Any, Literal

from devcheck.facts import ToDict

Status = Literal["passed", "skipped", "failed"]
_MAX_TEXT = 20_000


@dataclass(frozen=True)
class PhaseResult:
    """What one ``reproduce``/``fixed`` run did. ``raised`` is False when it returned."""

    phase: str
    device: str | None = None  # the device it actually ran on ("auto" resolved)
    device_name: str | None = None  # e.g. "NVIDIA H100 80GB HBM3", for the sweep's record
    raised: bool = False
    skipped: str | None = None
    exc_type: str | None = None
    message: str = ""
    traceback: str = ""
    value: str = ""  # what ``fixed`` reported on success
    output: str = ""  # tail of the child's stdout/stderr
    duration_s: float = 0.0
    timed_out: bool = False
    crashed: str | None = None  # the child died without a result (signal, exit code)

    @property
    def error_text(self) -> str:
        return f"{self.exc_type}: {self.message}" if self.exc_type else self.message


@dataclass(frozen=True)
class RunResult(ToDict):
    id: str
    device: str
    status: Status
    reason: str
    reproduce: PhaseResult | None = None
    fixed: PhaseResult | None = None
    duration_s: float = 0.0


# ---------------------------------------------------------------- child side (torch loaded)


def _resolve_device(pitfall: Any, device: str) -> str:
    """The device this pitfall runs on, or ``Skip`` with the reason it cannot run here."""
    import multiprocessing

    from devcheck.pitfalls._base import Skip, cuda_problem, mps_problem

    kinds = pitfall.device_kinds
    if "fork" in pitfall.needs and "fork" not in multiprocessing.get_all_start_methods():
        raise Skip("needs the fork start method (Linux/macOS)")

    def problem(kind: str) -> str | None:
        if kind == "cuda":
            why = cuda_problem()
            if why is None and "multi-gpu" in pitfall.needs:
                import torch

                if torch.cuda.device_count() < 2:
                    return f"needs 2+ GPUs, found {torch.cuda.device_count()}"
            return why
        return mps_problem() if kind == "mps" else None

    if device == "auto":
        reasons = []
        for kind in ("cuda", "mps", "cpu"):
            if kind in kinds:
                why = problem(kind)
                if why is None:
                    return kind
                reasons.append(f"{kind}: {why}")
        raise Skip("needs " + " or ".join(kinds) + "; " + "; ".join(reasons))
    kind = device.split(":")[0]
    if kind not in kinds:
        raise Skip(f"runs on {' or '.join(kinds)}, not {device} (try --device {kinds[0]})")
    why = problem(kind)
    if why is not None:
        raise Skip(f"needs {kind}: {why}")
    if kind == "cuda" and ":" in device:
        import torch

        if int(device.split(":")[1]) >= torch.cuda.device_count():
            raise Skip(f"{device} does not exist ({torch.cuda.device_count()} GPU(s) visible)")
    return device


def _process_state() -> dict[str, Any]:
    loaded_before = "torch" in sys.modules  # forked from the zygote: already there
    import torch

    shm = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None
    return {
        "default_device": str(torch.get_default_device()),
        "cuda_initialized": torch.cuda.is_initialized(),
        "bad_fork": torch.cuda._is_in_bad_fork(),  # a poisoned zygote would break CUDA runs
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "shm_total_bytes": shm.f_blocks * shm.f_frsize if shm else None,
        "overwrite_module_params": torch.__future__.get_overwrite_module_params_on_conversion(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "torch_loaded_before_run": loaded_before,
        "main_module": getattr(sys.modules["__main__"], "__name__", None),
    }


def _device_name(device: str) -> str | None:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device).index or 0)
    return "Apple MPS" if device.startswith("mps") else None


def run_phase_here(pitfall_id: str, phase: str, device: str) -> dict[str, Any]:
    """Run one phase in *this* process (the lab's child) and describe the outcome."""
    from devcheck import pitfalls
    from devcheck.pitfalls._base import Skip

    start = time.perf_counter()
    out: dict[str, Any] = {"phase": phase}
    if phase == "probe":  # what a fresh child sees: proves runs do not leak into each other
        out["value"] = json.dumps(_process_state())
        return out
    try:
        pitfall = pitfalls.get(pitfall_id)
        resolved = _resolve_device(pitfall, device)
        out["device"] = resolved
        out["device_name"] = _device_name(resolved)
        if pitfall.precondition is not None:
            pitfall.precondition(resolved)
        fn = pitfall.reproduce if phase == "reproduce" else pitfall.fixed
        value = fn(resolved)
        out["value"] = "" if value is None else str(value)[:_MAX_TEXT]
    except Skip as exc:
        out["skipped"] = str(exc)
    except BaseException as exc:  # the point of a reproduction is to catch anything
        out["raised"] = True
        out["exc_type"] = type(exc).__qualname__
        out["message"] = str(exc)[:_MAX_TEXT]
        out["traceback"] = "".join(traceback.format_exception(exc))[-_MAX_TEXT:]
    out["duration_s"] = round(time.perf_counter() - start, 4)
    return out


def _child(request: dict[str, Any], result_fd: int) -> None:
    """In the forked child: own process group, captured output, one phase, then exit."""
    os.setpgid(0, 0)
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
    capture.seek(max(0, capture.tell() - 4000))
    result["output"] = capture.read().decode("utf-8", "replace")
    with os.fdopen(result_fd, "w") as f:
        # one line: the zygote stops reading at the newline, so workers this phase left
        # running (holding the pipe open) cannot delay the result
        f.write(json.dumps(result) + "\n")


def _fork_phase(request: dict[str, Any]) -> dict[str, Any]:
    """Zygote side: fork, wait up to the timeout, kill the child's group on overrun."""
    timeout_s = float(request.get("timeout_s", 120))
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            _child(request, w)
        finally:
            os._exit(0)
    os.close(w)
    chunks: list[bytes] = []
    deadline = start + timeout_s
    timed_out = False
    with os.fdopen(r, "rb") as pipe:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([pipe], [], [], left)
            if ready:
                data = os.read(pipe.fileno(), 65536)
                if not data:
                    break
                chunks.append(data)
                if data.endswith(b"\n"):
                    break
    if timed_out:
        for target in (-pid, pid):
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    _, status = os.waitpid(pid, 0)
    try:  # reap workers the phase left behind (its process group)
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    elapsed = round(time.perf_counter() - start, 4)
    if timed_out:
        return {"phase": request["phase"], "timed_out": True, "duration_s": elapsed}
    try:
        return json.loads(b"".join(chunks).decode("utf-8", "replace"))
    except ValueError:
        how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit code {os.WEXITSTATUS(status)}")
        return {"phase": request["phase"], "crashed": how, "duration_s": elapsed}


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    """The zygote loop: one JSON request per line in, one JSON result per line out."""
    import torch  # noqa: F401  (the import we pay once)
    import torch._dynamo  # noqa: F401  (loaded lazily by meta ops and optimizer steps)
    import torch.utils.data  # noqa: F401

    import devcheck.pitfalls  # noqa: F401

    stdout.write(json.dumps({"ready": True}) + "\n")
    stdout.flush()
    for line in stdin:
        if not line.strip():
            continue
        result = _fork_phase(json.loads(line))
        stdout.write(json.dumps(result) + "\n")
        stdout.flush()


# ---------------------------------------------------------------- parent side (no torch)


def _phase_from(data: dict[str, Any]) -> PhaseResult:
    fields = PhaseResult.__dataclass_fields__
    return PhaseResult(**{k: v for k, v in data.items() if k in fields})


class Lab:
    """A pool of one zygote; use as a context manager. Never imports torch itself."""

    def __init__(self, *, mode: str | None = None, start_timeout_s: float = 180.0) -> None:
        mode = mode or os.environ.get("DEVCHECK_LAB_MODE") or (
            "fork" if hasattr(os, "fork") else "spawn")
        self.mode = mode
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self._broken: str | None = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _zygote(self) -> subprocess.Popen[str] | None:
        if self._proc is not None or self._broken is not None:
            return self._proc
        errors = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "devcheck.pitfalls.lab", "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
            text=True, bufsize=1,
        )
        ready = self._read_line(self._start_timeout_s)
        if not ready or not ready.get("ready"):
            errors.seek(0)
            tail = errors.read().decode("utf-8", "replace").strip().splitlines()[-1:]
            self._broken = ("the lab process (python -m devcheck.pitfalls.lab --serve) "
                            "failed to start"
                            + (f": {tail[0]}" if tail else ""))
            self.close()
        errors.close()
        return self._proc

    def _read_line(self, timeout_s: float) -> dict[str, Any] | None:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self._proc.stdout.readline()
        return json.loads(line) if line else None

    def run_phase(self, pitfall_id: str, phase: str, device: str = "auto",
                  timeout_s: float = 120.0) -> PhaseResult:
        request = {"id": pitfall_id, "phase": phase, "device": device, "timeout_s": timeout_s}
        if self.mode == "spawn":
            return self._run_fresh(request)
        proc = self._zygote()
        if proc is None or proc.stdin is None:
            return PhaseResult(phase=phase, crashed=self._broken or "lab not running")
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        data = self._read_line(timeout_s + 30)
        if data is None:
            self._broken = "the lab process stopped answering"
            self.close()
            return PhaseResult(phase=phase, crashed=self._broken)
        return _phase_from(data)

    def _run_fresh(self, request: dict[str, Any]) -> PhaseResult:
        cmd = [sys.executable, "-m", "devcheck.pitfalls.lab", "--once", request["id"],
               request["phase"], request["device"]]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=request["timeout_s"])
        except subprocess.TimeoutExpired:
            return PhaseResult(phase=request["phase"], timed_out=True,
                               duration_s=time.perf_counter() - start)
        lines = done.stdout.strip().splitlines()
        try:
            return _phase_from(json.loads(lines[-1]))
        except (IndexError, ValueError):
            return PhaseResult(phase=request["phase"], crashed=f"exit code {done.returncode}",
                               output=(done.stdout + done.stderr)[-4000:])

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- verdicts


def _describe(phase: PhaseResult) -> str:
    if phase.timed_out:
        return f"{phase.phase} timed out after {phase.duration_s:.0f} s"
    if phase.crashed:
        return f"{phase.phase} crashed ({phase.crashed})"
    first = phase.message.strip().splitlines()[0] if phase.message.strip() else ""
    return f"{phase.exc_type}: {first[:200]}"


def verdict(pitfall: Any, reproduce: PhaseResult, fixed: PhaseResult | None) -> tuple[Status, str]:
    """Pure: passed only when reproduce raised this pitfall's own symptom and fixed succeeded."""
    if reproduce.skipped:
        return "skipped", reproduce.skipped
    if not reproduce.raised:
        if reproduce.timed_out or reproduce.crashed:
            return "failed", _describe(reproduce)
        return "failed", "reproduce did not fail: the pitfall did not happen here"
    if not pitfall.matches_symptom(reproduce.error_text):
        return "failed", f"reproduce raised {_describe(reproduce)}, not this pitfall's symptom"
    if fixed is None:
        return "failed", "fixed was not run"
    if fixed.skipped:
        return "skipped", f"fixed: {fixed.skipped}"
    if fixed.raised or fixed.timed_out or fixed.crashed:
        return "failed", f"fixed failed: {_describe(fixed)}"
    return "passed", f"reproduced {_describe(reproduce)}; fixed: {fixed.value or 'ok'}"


def run_pitfall(lab: Lab, pitfall_id: str, device: str = "auto",
                timeout_s: float = 120.0) -> RunResult:
    from devcheck import pitfalls

    pitfall = pitfalls.get(pitfall_id)
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
    with Lab(mode=mode) as lab:
        return [run_pitfall(lab, i, device, timeout_s) for i in ids]


def _main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        serve(sys.stdin, sys.stdout)
        return 0
    if argv[:1] == ["--once"] and len(argv) == 4:
        print(json.dumps(run_phase_here(argv[1], argv[2], argv[3])))
        return 0
    print("usage: python -m devcheck.pitfalls.lab --serve | --once ID PHASE DEVICE",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
