"""``devcheck run`` with real child processes: exit codes, signals, orphans, live output.

Each test starts the real CLI (``python -m devcheck run``) as a subprocess, so the child
gets its own session, the signals are real and the orphan check looks at real pids.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

PY = sys.executable


def devcheck_run(tmp_path: Path, code: str, *extra: str, timeout: float = 60,
                 **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "devcheck", "run", "--no-plot", "-i", "0.05",
                           "--out", str(tmp_path / "out"), *extra, "--", PY, "-c",
                           textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


def wait_for(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            time.sleep(0.05)
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("code", [0, 3, 1, 255])
def test_exit_code_is_the_jobs(tmp_path: Path, code: int) -> None:
    res = devcheck_run(tmp_path, f"raise SystemExit({code})")
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr.split("[devcheck]")[0] or code == 0


def test_signal_exit_is_128_plus_n(tmp_path: Path) -> None:
    res = devcheck_run(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert res.returncode == 128 + signal.SIGKILL
    assert "SIGKILL" in res.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["exit_code"] == 137 and summary["crash"]["signal"] == "SIGKILL"


def test_live_output_order_and_clean_stdout(tmp_path: Path) -> None:
    res = devcheck_run(tmp_path, """
        import sys
        for i in range(200):
            print(f"line {i}")
            if i % 50 == 0:
                print(f"err {i}", file=sys.stderr, flush=True)
    """)
    assert res.returncode == 0
    assert res.stdout.splitlines() == [f"line {i}" for i in range(200)]  # nothing of ours
    err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("err ")]
    assert err_lines == ["err 0", "err 50", "err 100", "err 150"]
    assert "[devcheck]" in res.stderr


def test_output_is_live_not_buffered(tmp_path: Path) -> None:
    """The first stdout and stderr lines reach us while the job is still running."""
    proc = subprocess.Popen(
        [PY, "-m", "devcheck", "run", "--no-plot", "--out", str(tmp_path / "o"), "--", PY,
         "-c", "import sys,time; print('hello', flush=True); print('oops', file=sys.stderr, "
               "flush=True); time.sleep(20)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == "hello\n"
        assert proc.stderr.readline() == "oops\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM


def test_sigint_is_forwarded_to_the_job(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [PY, "-m", "devcheck", "run", "--no-plot", "--out", str(tmp_path / "o"), "--", PY,
         "-c", textwrap.dedent(f"""
            import time, pathlib
            pathlib.Path({str(ready)!r}).write_text("1")
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                print("job saw KeyboardInterrupt", flush=True)
                raise SystemExit(42)
         """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(ready)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "job saw KeyboardInterrupt" in out
    assert proc.returncode == 42, err
    timeline = (tmp_path / "o" / "timeline.jsonl").read_text()
    assert "SIGINT forwarded to the job" in timeline


def test_no_orphans_grandchildren_killed(tmp_path: Path) -> None:
    """A grandchild in the group, and one that escaped it with setsid, both end."""
    pids = tmp_path / "pids"
    res = devcheck_run(tmp_path, f"""
        import subprocess, sys, time, pathlib
        a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
        pathlib.Path({str(pids)!r}).write_text(f"{{a.pid}} {{b.pid}}")
        time.sleep(0.5)
        raise SystemExit(0)  # exits, leaving both behind
    """)
    assert res.returncode == 0, res.stderr
    a, b = (int(x) for x in pids.read_text().split())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (gone(a) and gone(b)):
        time.sleep(0.05)
    assert gone(a) and gone(b)


def test_command_not_found_exits_127(tmp_path: Path) -> None:
    res = subprocess.run([PY, "-m", "devcheck", "run", "--", "no-such-command-xyz"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 127
    assert "no-such-command-xyz" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("bad", ["0", "nan", "inf", "-1", "abc"])
def test_bad_interval_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    res = subprocess.run([PY, "-m", "devcheck", "run", "-i", bad, "--", "true"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2 and "--interval" in res.stderr and "Traceback" not in res.stderr


def test_unwritable_out_fails_before_the_job(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    marker = tmp_path / "ran"
    res = subprocess.run([PY, "-m", "devcheck", "run", "--out", str(blocker / "sub"), "--", PY,
                          "-c", f"open({str(marker)!r}, 'w')"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "cannot write output folder" in res.stderr
    assert not marker.exists()


def test_crash_gets_its_explanation(tmp_path: Path) -> None:
    res = devcheck_run(tmp_path, """
        raise RuntimeError("Expected a 'cuda' device type for generator but found 'cpu'")
    """)
    assert res.returncode == 1
    assert "Traceback" in res.stderr  # the job's own traceback, passed through
    assert "default_device_sampler_generator" in res.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["crash"]["pitfall"] == "default_device_sampler_generator"


def test_cpu_job_outputs_and_verdict(tmp_path: Path) -> None:
    res = subprocess.run([PY, "-m", "devcheck", "run", "-i", "0.05", "--json", "--out",
                          str(tmp_path / "o"), "--", PY, "-c",
                          "import time\nwhile time.process_time() < 1.0: pass\n"
                          "print('done')"],  # 1 s of CPU, however loaded the machine
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "done"
    doc = json.loads(lines[-1])
    assert doc["stats"]["host"]["cpu_pct_peak"] > 0  # busy (how busy depends on the load)
    out = tmp_path / "o"
    assert {p.name for p in out.iterdir()} == {"timeline.jsonl", "summary.json", "timeline.png"}
    records = [json.loads(x) for x in (out / "timeline.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "start" and records[-1]["kind"] == "end"
    assert all(r["v"] == 1 for r in records)
    samples = [r for r in records if r["kind"] == "sample"]
    assert len(samples) >= 3 and samples[-1]["t_s"] > samples[0]["t_s"]
    if not doc["stats"]["gpus"]:  # this machine: no NVIDIA GPU
        assert "no NVIDIA GPU here: the job ran on the CPU" in res.stderr
        assert doc["devices"][0] == "no NVIDIA GPU here: the job ran on the CPU"


def test_env_and_stdin_pass_through(tmp_path: Path) -> None:
    env = dict(os.environ, DEVCHECK_RUN_TEST="hello")
    res = subprocess.run([PY, "-m", "devcheck", "run", "--no-plot", "--out",
                          str(tmp_path / "o"), "--", PY, "-c",
                          "import os,sys; print(os.environ['DEVCHECK_RUN_TEST'], "
                          "sys.stdin.read().upper())"],
                         input="abc", capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "hello ABC"


# --- the pieces, in-process -----------------------------------------------------------

def test_stderr_tee_writes_through_and_keeps_a_bounded_tail(tmp_path: Path) -> None:
    from devcheck.run.runner import StderrTee

    r, w = os.pipe()
    sink = open(tmp_path / "copy", "wb")
    tee = StderrTee(os.fdopen(r, "rb", buffering=0), sink.fileno(), limit=1000)
    tee.start()
    payload = b"".join(b"%06d\n" % i for i in range(5000))  # 35 000 bytes
    os.write(w, payload)
    os.close(w)
    tee.join(10)
    sink.close()
    assert (tmp_path / "copy").read_bytes() == payload  # nothing lost or reordered
    tail = tee.tail()
    assert len(tail) == 1000 and payload.decode().endswith(tail)


def test_stderr_tee_survives_a_closed_target() -> None:
    from devcheck.run.runner import StderrTee

    r, w = os.pipe()
    dead_r, dead_w = os.pipe()
    os.close(dead_r)  # writing to dead_w now fails with EPIPE
    tee = StderrTee(os.fdopen(r, "rb", buffering=0), dead_w)
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        tee.start()
        os.write(w, b"still captured\n")
        os.close(w)
        tee.join(10)
    finally:
        signal.signal(signal.SIGPIPE, old)
        os.close(dead_w)
    assert tee.tail() == "still captured\n"


@pytest.mark.parametrize("returncode, code", [(0, 0), (3, 3), (-9, 137), (-15, 143),
                                              (-2, 130)])
def test_exit_code_of(returncode: int, code: int) -> None:
    from devcheck.run.runner import exit_code_of

    assert exit_code_of(returncode) == code


def test_kill_leftovers_ends_a_known_pid_outside_the_group() -> None:
    from devcheck.run.runner import kill_leftovers

    stray = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    try:
        assert kill_leftovers(stray.pid, {stray.pid}, grace_s=5.0) == 1
        assert stray.wait(10) == -signal.SIGTERM
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/comm is Linux's")
def test_process_names_with_spaces_and_parentheses(tmp_path: Path) -> None:
    from devcheck.probe.procs import ProcessTree

    child = subprocess.Popen([PY, "-c", textwrap.dedent("""
        import time
        with open("/proc/self/comm", "w") as f:
            f.write("we (ird) name")
        time.sleep(30)
    """)])
    try:
        tree = ProcessTree(child.pid)
        deadline = time.monotonic() + 20
        while True:
            reading = tree.sample()
            if reading.procs and reading.procs[0].name == "we (ird) name":
                break
            assert time.monotonic() < deadline, reading
            time.sleep(0.05)
        p = reading.procs[0]
        assert p.ppid == os.getpid() and p.threads == 1 and (p.rss_bytes or 0) > 1_000_000
        again = tree.sample().procs[0]
        assert again.cpu_pct is not None and again.cpu_pct >= 0
    finally:
        child.kill()
        child.wait()
    assert tree.sample().procs == ()


def test_ctrl_z_stops_job_and_devcheck_and_sigcont_resumes_both(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [PY, "-m", "devcheck", "run", "--no-plot", "--out", str(tmp_path / "o"), "--", PY,
         "-c", f"import time, pathlib; pathlib.Path({str(ready)!r}).write_text('1'); "
               "time.sleep(1.5); print('finished')"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(ready)
    job = [c for c in psutil.Process(proc.pid).children()  # not the keeper (a fork of us)
           if c.name() != "devcheck-keeper" and c.cmdline()[1:2] == ["-c"]][0]
    proc.send_signal(signal.SIGTSTP)
    deadline = time.monotonic() + 10
    while not (job.status() == psutil.STATUS_STOPPED
               and psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED):
        assert time.monotonic() < deadline, (job.status(), psutil.Process(proc.pid).status())
        time.sleep(0.02)
    time.sleep(2.0)  # longer than the job's own 1.5 s sleep: it is still stopped
    assert job.status() == psutil.STATUS_STOPPED
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "finished"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreaper is Linux's")
def test_orphans_of_the_job_are_reaped_while_it_runs(tmp_path: Path) -> None:
    """A daemon the job double-forks is re-parented to devcheck; when it exits it must not
    stay a zombie until the end of a long job."""
    pid_file = tmp_path / "daemon"
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [PY, "-m", "devcheck", "run", "--no-plot", "--out", str(tmp_path / "o"), "--", PY,
         "-c", textwrap.dedent(f"""
            import os, time, pathlib
            if os.fork() == 0:          # child
                if os.fork() == 0:      # grandchild: the daemon, orphaned at once
                    os.setsid()
                    pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
                    time.sleep(0.3)
                    os._exit(0)
                os._exit(0)
            os.wait()
            pathlib.Path({str(ready)!r}).write_text("1")
            time.sleep(30)
         """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(ready)
        daemon = int(wait_for(pid_file))
        deadline = time.monotonic() + 15
        while psutil.pid_exists(daemon):  # a zombie still "exists"; reaped, it does not
            assert time.monotonic() < deadline, psutil.Process(daemon).status()
            time.sleep(0.05)
        assert proc.poll() is None  # the job still runs
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc children files")
def test_a_process_started_by_a_non_main_thread_is_found(tmp_path: Path) -> None:
    from devcheck.probe.procs import FULL_SCAN_EVERY, ProcessTree

    pid_file = tmp_path / "pid"
    child = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import subprocess, sys, threading, time, pathlib
        def spawn():
            p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
            pathlib.Path({str(pid_file)!r}).write_text(str(p.pid))
            p.wait()
        threading.Thread(target=spawn, daemon=True).start()
        time.sleep(30)
    """)])
    try:
        grandchild = int(wait_for(pid_file))
        tree = ProcessTree(child.pid)
        seen = [grandchild in tree.pids() for _ in range(2 * FULL_SCAN_EVERY)]
        assert seen[0]  # the first call is a full scan
        assert all(seen)  # and the quick calls keep what it found
    finally:
        child.kill()
        child.wait()
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
