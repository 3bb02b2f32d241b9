"""devcheck dist for real: 2 gloo ranks through torchrun, a missing node, a stalled rank.

Each test launches torch's own launcher in a subprocess (a few seconds to import torch per
rank on a small CPU box), so the sweep sizes are small. Orphans are looked for by a unique
marker in the command lines of every process on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from devcheck.dist.spawn import free_port

DEVCHECK = [sys.executable, "-m", "devcheck"]


def _run(args: list[str], timeout: float, env: dict[str, str] | None = None
         ) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = subprocess.run(DEVCHECK + args, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return done, time.monotonic() - start


def _leftovers(marker: str) -> list[str]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if marker in cmd and p.pid != os.getpid():
            out.append(f"{p.pid}: {cmd[:120]}")
    return out


def _no_orphans(marker: str) -> None:
    deadline = time.monotonic() + 5
    while _leftovers(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leftovers(marker) == []


def test_two_gloo_ranks_correct_with_busbw_per_size() -> None:
    done, _ = _run(["dist", "--nproc", "2", "--backend", "gloo", "--json",
                    "--sizes", "4KiB,1MiB"], timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    data = json.loads(done.stdout)
    launch = data["launch"]
    assert launch["world_size"] == 2 and launch["stages_passed"] == ["rendezvous", "gloo"]
    checks = {c["op"]: c for c in launch["checks"]}
    assert set(checks) == {"all_reduce", "all_gather", "broadcast"}
    assert all(c["wrong"] == 0 and c["ok"] and c["elements"] > 0 for c in checks.values())
    points = {(b["op"], b["size_bytes"]) for b in launch["bandwidth"]}
    assert points == {(op, s) for op in ("all_reduce", "all_gather", "broadcast")
                      for s in (4096, 1024**2)}
    for b in launch["bandwidth"]:
        factor = {"all_reduce": 1.0, "all_gather": 0.5, "broadcast": 1.0}[b["op"]]
        assert b["busbw_gbps"] == pytest.approx(b["algbw_gbps"] * factor, rel=1e-3)
        assert b["time_us"] > 0
    assert launch["barrier_latency_us"]["gloo"] > 0
    assert launch["hang"] is None and data["exit_code"] == 0
    assert "torch.distributed.run" in launch["command"]


def test_missing_node_fails_within_timeout_and_names_it() -> None:
    marker = f"devcheck-test-{uuid.uuid4().hex[:8]}"
    endpoint = f"127.0.0.1:{free_port()}"
    timeout = 8
    done, took = _run(["dist", "--nnodes", "2", "--nproc", "1", "--timeout", str(timeout),
                       "--rdzv-endpoint", endpoint, "--rdzv-id", marker], timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert took < timeout + 10
    assert "node rank 1 never arrived" in done.stdout
    assert "rendezvous" in done.stdout and endpoint in done.stdout
    assert "Traceback" not in done.stdout
    _no_orphans(marker)


def test_a_stalled_rank_is_named_and_everything_is_killed() -> None:
    marker = f"devcheck-stall-{uuid.uuid4().hex[:8]}"
    done, took = _run(["dist", "--nproc", "2", "--backend", "gloo", "--json", "--timeout",
                       "25", "--sizes", "4KiB"], timeout=120,
                      env={"DEVCHECK_DIST_STALL": "1:all_gather:1",
                           "DEVCHECK_TEST_MARKER": marker})
    assert done.returncode == 1, done.stdout[-3000:]
    data = json.loads(done.stdout)
    hang = data["launch"]["hang"]
    assert data["launch"]["timed_out"] is True and took < 25 + 15
    assert hang["missing_ranks"] == [1] and hang["stage"] == "gloo"
    assert "rank 1 never reached all_gather #1" in hang["summary"]
    assert any("TORCH_DISTRIBUTED_DEBUG=DETAIL" in s for s in hang["next_steps"])
    ranks = {r["rank"]: r for r in data["launch"]["ranks"]}
    assert ranks[0]["last_event"] == "enter all_gather #1"
    # every rank and the launcher are gone (the marker travels in their environment)
    for p in psutil.process_iter(["pid"]):
        try:
            assert p.environ().get("DEVCHECK_TEST_MARKER") != marker or p.pid == os.getpid()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_interrupt_kills_the_launcher_and_every_rank(sig: int) -> None:
    """Ctrl-C exits 130, SIGTERM/SIGHUP 128+N (a CI cancel is not a Ctrl-C), and even a
    SIGKILLed devcheck, which runs no clean-up, leaves no torchrun or rank behind."""
    marker = f"devcheck-int-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(DEVCHECK + ["dist", "--nproc", "2", "--backend", "gloo",
                                        "--timeout", "120", "--sizes", "4KiB"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DEVCHECK_DIST_STALL": "0:all_reduce:1",
                                 "DEVCHECK_TEST_MARKER": marker})
    try:
        deadline = time.monotonic() + 60  # wait until torchrun has started its ranks
        me = psutil.Process(proc.pid)
        while time.monotonic() < deadline and len(me.children(recursive=True)) < 3:
            time.sleep(0.2)
        assert len(me.children(recursive=True)) >= 3, "torchrun never started 2 ranks"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + sig, err
        assert (f"interrupted ({signal.Signals(sig).name}); the launcher and its ranks were "
                "killed") in err
        assert "Traceback" not in err

    def tagged() -> list[int]:
        pids = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.environ().get("DEVCHECK_TEST_MARKER") == marker and p.pid != os.getpid() \
                        and p.status() != psutil.STATUS_ZOMBIE:
                    pids.append(p.pid)
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return pids

    deadline = time.monotonic() + 20  # torchrun stops its ranks on the death signal
    while tagged() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = tagged()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


@pytest.mark.requires_cuda
def test_nccl_stage_on_the_gpus() -> None:
    done, _ = _run(["dist", "--backend", "nccl", "--json", "--sizes", "1MiB,64MiB",
                    "--timeout", "180"], timeout=300)
    data = json.loads(done.stdout)
    launch = data["launch"]
    assert done.returncode == 0, json.dumps(data["findings"], indent=1)
    assert launch["stages_passed"] == ["rendezvous", "gloo", "nccl"]
    nccl = [c for c in launch["checks"] if c["backend"] == "nccl"]
    assert len(nccl) == 3 and all(c["wrong"] == 0 for c in nccl)
    assert launch["nccl_version"] and launch["device_names"]
    assert any(b["backend"] == "nccl" and b["size_bytes"] == 64 * 1024**2
               for b in launch["bandwidth"])
