"""The keeper: a ``kill -9`` of ``devcheck run`` must not leave the job running.

The end-to-end tests start the real CLI, SIGKILL it while the job runs, and look in /proc
for what is left; the in-process ones cover the protocol and the choice of victims.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devcheck.run import jobprocs, keeper
from devcheck.run.jobprocs import Proc

PY = sys.executable
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the keeper is Linux's")


def wait_for(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def running(pid: int) -> bool:
    """Alive and not a zombie, as /proc says."""
    p = jobprocs.read_stat(pid)
    return p is not None and not p.zombie


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if running(p)]
    return left


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if pid <= 1:  # 0 (not found) would signal our own process group
            continue
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# A job that finds the keeper (devcheck's other child) and writes every pid of its own
# tree: a worker child, a grandchild that left with setsid and was orphaned (re-parented
# to devcheck, a child subreaper), and that grandchild's own child.
TREE_JOB = """
import os, subprocess, sys, time
from pathlib import Path

out = Path(sys.argv[1])
scrub = sys.argv[2] == "scrub"


def keeper_pid():
    parent = os.getppid()
    for tid in os.listdir(f"/proc/{parent}/task"):
        for kid in open(f"/proc/{parent}/task/{tid}/children").read().split():
            if open(f"/proc/{kid}/comm").read().strip() == "devcheck-keeper":
                return int(kid)
    return 0


worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    env = {} if scrub else None  # scrub: no DEVCHECK_RUN_ID, found by devcheck's reports
    kid = subprocess.Popen(["sleep", "120"], env=env)
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                  env=env, start_new_session=True)
    os.write(w, f"{grandchild.pid} {kid.pid}".encode())
    os._exit(0)  # the grandchild and kid are orphans now
os.close(w)
os.wait()
orphans = os.read(r, 100).decode()
time.sleep(0.3)
k = keeper_pid()
env_id = os.environ.get("DEVCHECK_RUN_ID", "")
out.write_text(f"{os.getpid()} {worker.pid} {orphans} {k} {env_id}\\n")
time.sleep(120)
"""


def start_tree(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[bytes], list[int], str]:
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(TREE_JOB))
    pids_file = tmp_path / "pids"
    proc = subprocess.Popen([PY, "-m", "devcheck", "run", "--no-plot", "-i", "0.05", "--out",
                             str(tmp_path / "o"), "--", PY, str(job), str(pids_file), mode],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        words = wait_for(pids_file).split()
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.communicate(timeout=10)[1].decode()) from None
    return proc, [int(w) for w in words[:5]], words[5] if len(words) > 5 else ""


@linux
@pytest.mark.parametrize("mode", ["tagged", "scrub"])
def test_kill_9_of_devcheck_run_ends_the_whole_job(tmp_path: Path, mode: str) -> None:
    """SIGKILL devcheck while the job runs: its main process, a worker, and a setsid'd
    orphan with a child of its own all end within seconds, and so does the keeper.
    ``scrub``: the orphans have no DEVCHECK_RUN_ID; devcheck's reports must name them."""
    proc, pids, env_id = start_tree(tmp_path, mode)
    job, worker, grandchild, kid, keeper_pid = pids
    try:
        assert keeper_pid, "no devcheck-keeper among devcheck's children"
        assert len(env_id) == 16, "the job's environment lacks DEVCHECK_RUN_ID"
        assert all(running(p) for p in (job, worker, grandchild, kid))
        if mode == "scrub":
            time.sleep(0.5)  # let the sampler (every 0.05 s) report the orphans
        proc.kill()
        proc.wait(10)
        left = wait_gone(pids)
        assert not left, f"still running after devcheck's SIGKILL: {left} of {pids}"
    finally:
        kill_all(pids)
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@linux
def test_normal_end_keeps_the_exit_code_and_leaves_no_keeper(tmp_path: Path) -> None:
    out = tmp_path / "keeper"
    code = textwrap.dedent(f"""
        import os, pathlib
        parent = os.getppid()
        kids = [k for t in os.listdir(f"/proc/{{parent}}/task")
                for k in open(f"/proc/{{parent}}/task/{{t}}/children").read().split()]
        names = {{k: open(f"/proc/{{k}}/comm").read().strip() for k in kids}}
        pathlib.Path({str(out)!r}).write_text(
            " ".join(k for k, n in names.items() if n == "devcheck-keeper") + "\\n")
        raise SystemExit(7)
    """)
    res = subprocess.run([PY, "-m", "devcheck", "run", "--no-plot", "--out",
                          str(tmp_path / "o"), "--", PY, "-c", code],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 7, res.stderr
    found = out.read_text().split()
    assert len(found) == 1, f"keepers seen by the job: {found}"
    assert not wait_gone([int(found[0])], timeout=2.0)


@linux
def test_a_normal_end_also_ends_tagged_processes_outside_the_tree(tmp_path: Path) -> None:
    """A process carrying the run's DEVCHECK_RUN_ID that devcheck cannot see as its own
    (an orphan re-parented to init before devcheck became a child subreaper: the
    sig.run.setsid.int-group audit case, 4 runs in 10) is ended when the job ends."""
    tag, go = tmp_path / "tag", tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, pathlib, time
        pathlib.Path({str(tag)!r}).write_text(os.environ["DEVCHECK_RUN_ID"] + "\\n")
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.02)
    """)
    proc = subprocess.Popen([PY, "-m", "devcheck", "run", "--no-plot", "--out",
                             str(tmp_path / "o"), "--", PY, "-c", code],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stray = None
    try:
        token = wait_for(tag).strip()
        stray = subprocess.Popen(["sleep", "60"], env=dict(os.environ, DEVCHECK_RUN_ID=token),
                                 start_new_session=True)
        go.write_text("1")
        assert proc.wait(30) == 0
        assert stray.wait(5) == -signal.SIGTERM
    finally:
        if stray is not None and stray.poll() is None:
            stray.kill()
            stray.wait()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@linux
def test_the_keeper_is_not_a_leftover_of_the_job() -> None:
    """At the end devcheck ends every descendant of its own, but not its keeper (which
    exits on "done"): a job that leaves nothing behind has 0 leftovers."""
    code = ("from devcheck.run.job import run_job\n"
            "import sys\n"
            "o = run_job([sys.executable, '-c', 'pass'], interval_s=0.05, out_dir=None,\n"
            "            plot=False, dedicated=True)\n"
            "print(o.job.exit_code, o.job.killed_leftovers)\n")
    res = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["0", "0"], res.stderr


@linux
@pytest.mark.parametrize("closed", ["<&- >&-", ">&- 2>&-", "<&- >&- 2>&-"])
def test_the_keeper_works_with_devchecks_stdio_closed(tmp_path: Path, closed: str) -> None:
    """A closed stdin/stdout/stderr of devcheck must not hand the keeper's pipe fd 0-2 (the
    keeper points those at /dev/null, and would read the end of its pipe at once)."""
    done = tmp_path / "done"
    job = f"import time, pathlib; time.sleep(0.8); pathlib.Path({str(done)!r}).write_text('1')"
    script = (f"exec {shlex.quote(PY)} -m devcheck run --no-plot --out "
              f"{shlex.quote(str(tmp_path / 'o'))} -- {shlex.quote(PY)} -c "
              f"{shlex.quote(job)} {closed}")
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and done.exists(), res.stderr


def test_a_library_caller_gets_no_keeper_and_an_untouched_environment() -> None:
    from devcheck.run.job import run_job

    code = ("import os, sys\n"
            "parent = os.getppid()\n"
            "names = [open(f'/proc/{k}/comm').read().strip()\n"
            "         for t in os.listdir(f'/proc/{parent}/task')\n"
            "         for k in open(f'/proc/{parent}/task/{t}/children').read().split()]\n"
            "bad = 'devcheck-keeper' in names or 'DEVCHECK_RUN_ID' in os.environ\n"
            "sys.exit(3 if bad else 0)\n")
    if not sys.platform.startswith("linux"):
        code = "import os, sys; sys.exit(3 if 'DEVCHECK_RUN_ID' in os.environ else 0)"
    outcome = run_job([PY, "-c", code], interval_s=0.05, out_dir=None, plot=False)
    assert outcome.job.exit_code == 0


# The keeper on its own, in a fresh single-threaded interpreter: with "done" it leaves the
# tagged process alone; without it (devcheck "dies": os._exit) it ends that process.
OWNER = """
import os, subprocess, sys, time
from devcheck.run import keeper, runner
env, token = runner.tag_environment(None)
quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env,
                          **quiet)
other = subprocess.Popen(["sleep", "60"], **quiet)  # untagged, unreported
k = keeper.start(os.getpid() + 10**7, token)  # a job pid that does not exist
print(victim.pid, other.pid, k.pid if k else 0, flush=True)
time.sleep(0.2)
if sys.argv[1] == "done":
    k.done()
os._exit(0)
"""


@linux
@pytest.mark.parametrize("end", ["done", "die"])
def test_keeper_acts_only_when_its_devcheck_dies(end: str) -> None:
    res = subprocess.run([PY, "-c", OWNER, end], capture_output=True, text=True, timeout=60)
    victim, other, keeper_pid = (int(w) for w in res.stdout.split())
    try:
        assert keeper_pid, res.stderr
        assert not wait_gone([keeper_pid], timeout=5.0)  # gone, whichever end
        assert running(other)  # not the job's: never touched
        if end == "done":
            time.sleep(0.5)
            assert running(victim), "the keeper killed after a normal end"
        else:
            assert not wait_gone([victim], timeout=5.0)
    finally:
        kill_all([victim, other])


# --- the pieces ---------------------------------------------------------------------------

def test_report_lines_are_atomic_and_parse_back() -> None:
    pids = list(range(100000, 102000))
    lines = keeper.encode(pids)
    assert len(lines) > 1 and all(len(line) < keeper.LINE_MAX for line in lines)
    data = b"".join(lines) + b"done\npids 7"
    done, got, rest = keeper.parse(data)
    assert done and got == pids and rest == b"pids 7"
    assert keeper.parse(b"pids 1 x 2\n") == (False, [1, 2], b"")
    assert keeper.encode([]) == []


def test_select_takes_the_job_and_nothing_else() -> None:
    procs = {
        1: Proc(ppid=0, sid=1, start=1),
        100: Proc(ppid=50, sid=100, start=500),      # the job (its own session)
        101: Proc(ppid=100, sid=100, start=501),     # a worker
        102: Proc(ppid=1, sid=100, start=502),       # an orphan still in the job's session
        200: Proc(ppid=1, sid=200, start=600),       # setsid'd, reported by devcheck
        201: Proc(ppid=1, sid=200, start=601),       # ... its session, orphaned
        202: Proc(ppid=201, sid=200, start=602),     # ... and a child of that
        300: Proc(ppid=1, sid=300, start=700),       # reported once, pid since recycled
        400: Proc(ppid=1, sid=400, start=800),       # tagged (DEVCHECK_RUN_ID)
        401: Proc(ppid=400, sid=400, start=801, zombie=True),
        500: Proc(ppid=1, sid=500, start=900),       # a stranger
        501: Proc(ppid=500, sid=500, start=901),     # ... and its child
        999: Proc(ppid=1, sid=999, start=990),       # the keeper itself, tagged
    }
    chosen = jobprocs.select(procs, job_pid=100, job_start=500,
                           known={200: 600, 300: 650}, marked=lambda pid: pid in (400, 999),
                           spare=(999,))
    assert chosen == {100, 101, 102, 200, 201, 202, 400}


def test_select_does_not_trust_a_recycled_job_pid() -> None:
    procs = {100: Proc(ppid=1, sid=100, start=9000), 101: Proc(ppid=1, sid=100, start=9001)}
    assert jobprocs.select(procs, job_pid=100, job_start=500, known={},
                         marked=lambda pid: False) == set()
    assert jobprocs.select(procs, job_pid=100, job_start=9000, known={},
                         marked=lambda pid: False) == {100, 101}


def test_tag_environment_leaves_the_callers_alone() -> None:
    from devcheck.run.runner import TAG_VAR, tag_environment

    given = {"A": "1"}
    env, token = tag_environment(given)
    if sys.platform.startswith("linux"):
        assert env == {"A": "1", TAG_VAR: token} and token and len(token) == 16
    else:
        assert env == {"A": "1"} and token is None
    assert given == {"A": "1"} and TAG_VAR not in os.environ
