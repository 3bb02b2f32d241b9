"""Launch the ranks through torch's own launcher, ``python -m torch.distributed.run``.

devcheck never starts ranks itself: the subprocess is torchrun (elastic agent, rendezvous,
``RANK``/``LOCAL_RANK``/``WORLD_SIZE``), running ``devcheck.dist.worker`` in each rank. The
launcher gets its own session; on a timeout or Ctrl-C the launcher and every process below
it (torchrun starts each worker in a session of its own, so a process-group kill alone
would leave them behind) get SIGTERM, then SIGKILL: no orphans.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcheck.dist.hang import diagnose_hang, rank_states
from devcheck.dist.model import BandwidthPoint, CollectiveCheck, LaunchResult
from devcheck.probe.libc import tied_command
from devcheck.stopsignals import stop_signals_raise

DEFAULT_RDZV_PORT = 29400  # torchrun's own default for the c10d rendezvous
KILL_GRACE_S = 3.0
STARTUP_S = 4  # torchrun's own start (importing torch) before its rendezvous clock runs
_BANNER = ("*****", "Setting OMP_NUM_THREADS", "W1", "I1")


@dataclass(frozen=True)
class LaunchOptions:
    """What to launch. ``nnodes > 1`` uses the c10d rendezvous at ``rdzv_endpoint``."""

    nproc: int
    backends: tuple[str, ...] = ("gloo",)
    timeout_s: float = 60.0
    sizes: tuple[int, ...] = (4096,)
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    rdzv_id: str = "devcheck-dist"
    python: str = sys.executable

    @property
    def endpoint(self) -> str:
        return self.rdzv_endpoint or f"127.0.0.1:{DEFAULT_RDZV_PORT}"


def build_command(opts: LaunchOptions, out_dir: Path) -> list[str]:
    """The torchrun command line (pure): what a user would type, plus devcheck's worker."""
    cmd = [opts.python, "-m", "torch.distributed.run", "--nproc-per-node", str(opts.nproc),
           "--max-restarts", "0", "--monitor-interval", "0.5"]
    if opts.nnodes == 1 and opts.rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        # c10d fails by itself after join_timeout (counted once torchrun has imported
        # torch, a few seconds in); our own deadline is the backstop.
        cmd += ["--nnodes", str(opts.nnodes), "--node-rank", str(opts.node_rank),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", opts.endpoint,
                "--rdzv-id", opts.rdzv_id,
                "--rdzv-conf", f"join_timeout={max(1, int(opts.timeout_s) - STARTUP_S)}"]
    cmd += ["-m", "devcheck.dist.worker", "--out", str(out_dir),
            "--backends", ",".join(opts.backends),
            "--sizes", ",".join(str(s) for s in opts.sizes),
            "--timeout", f"{opts.timeout_s:g}"]
    return cmd


def _descendants(pid: int) -> list[Any]:
    try:
        import psutil

        return list(psutil.Process(pid).children(recursive=True))
    except Exception:  # gone already, or psutil missing: the group kill still runs
        return []


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the launcher, its group and every descendant; SIGKILL what survives."""
    kids = _descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for k in kids:
            with contextlib.suppress(Exception):
                k.send_signal(sig)
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            if proc.poll() is not None and not any(_alive(k) for k in kids):
                return
            time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_S)


def _alive(p: Any) -> bool:
    try:
        return bool(p.is_running()) and p.status() != "zombie"
    except Exception:
        return False


def _output_tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(_BANNER)]
    return "\n".join(lines)[-limit:]


def _results(out_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(out_dir.glob("rank*.result.json")):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


@contextlib.contextmanager
def _run_dir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="devcheck-dist-") as d:
        yield Path(d)


def launch(opts: LaunchOptions, *, run_dir: Path | None = None,
           env: dict[str, str] | None = None) -> LaunchResult:
    """Run the ranks, wait at most ``timeout_s`` (+ the c10d grace), and read what they did.

    Raises only KeyboardInterrupt (after killing everything it started).
    """
    world = opts.nproc * opts.nnodes
    with _run_dir(run_dir) as out_dir:
        cmd = build_command(opts, out_dir)
        log = out_dir / "launcher.log"
        start = time.monotonic()
        with open(log, "wb") as sink:
            # torchrun gets SIGTERM if we die, even by SIGKILL: it then stops its ranks
            proc = subprocess.Popen(tied_command(cmd, signal.SIGTERM), stdout=sink,
                                    stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **(env or {})})
        timed_out = False
        try:
            with stop_signals_raise():  # a cancelled CI job: killed as on Ctrl-C
                deadline = start + opts.timeout_s + (5.0 if opts.nnodes > 1 else 0.0)
                while proc.poll() is None:
                    if time.monotonic() >= deadline:
                        timed_out = True
                        break
                    time.sleep(0.1)
        except KeyboardInterrupt:
            kill_tree(proc)
            raise
        states = rank_states(out_dir, world)  # before the kill: where each rank hung
        if timed_out:
            kill_tree(proc)
        duration = round(time.monotonic() - start, 3)
        return _assemble(opts, cmd, out_dir, states, proc.returncode, timed_out, duration)


def _assemble(opts: LaunchOptions, cmd: list[str], out_dir: Path, states: Any,
              exit_code: int | None, timed_out: bool, duration: float) -> LaunchResult:
    results = _results(out_dir)
    rank0 = next((r for r in results if r.get("rank") == 0), None)
    checks = tuple(CollectiveCheck(**c, ok=c["wrong"] == 0) for c in
                   (rank0 or {}).get("checks", []))
    bandwidth = tuple(BandwidthPoint(**b) for b in (rank0 or {}).get("bandwidth", []))
    passed = tuple(s for s in ("rendezvous", "gloo", "nccl")
                   if states and all(s in st.stages_passed for st in states.values()))
    world = int((rank0 or {}).get("world_size", opts.nproc * opts.nnodes))
    failed = timed_out or exit_code not in (0, None) or len(passed) < 1 + len(opts.backends)
    output = _output_tail(out_dir / "launcher.log") if failed else ""
    hang = diagnose_hang(states, world, opts, timed_out=timed_out, exit_code=exit_code,
                         command=cmd, launcher_output=output) if failed else None
    return LaunchResult(
        command=tuple(cmd), world_size=world, local_ranks=opts.nproc,
        backends=opts.backends, exit_code=None if timed_out else exit_code,
        timed_out=timed_out, duration_s=duration, stages_passed=passed, checks=checks,
        bandwidth=bandwidth,
        barrier_latency_us=dict((rank0 or {}).get("barrier_latency_us", {})),
        ranks=tuple(st.public() for st in states.values()), hang=hang,
        launcher_output=output,
        nccl_version=(rank0 or {}).get("nccl_version"),
        device_names=tuple(sorted({r["device_name"] for r in results if r.get("device_name")})),
        timeout_s=opts.timeout_s,
    )
