"""What ``devcheck run`` costs the job it watches, against the same job run bare.

Three targets (issue 11), each measured against an anchor taken in the same run:

1. a CPU-bound job's own wall time under ``devcheck run`` (4 Hz) vs bare: <= 1.03x
   (interleaved repetitions, best of each, so machine-load drift hits both alike);
2. the sampler thread's own CPU at 4 Hz: <= 1% of one core (its thread CPU time over
   the sampling time, watching a job of 1 and of 5 processes);
3. start-up: how much later the child starts under ``devcheck run`` than when launched
   bare: <= 0.1 s (the child stamps time.time() as its first statement).

    .venv/bin/python benchmarks/bench_run.py [--reps 3] [--work 4000000]

Not a test: it prints numbers (copy them into benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
# devcheck run, reporting its own CPU time (not the job's) when it exits
_OWN_CPU = ("import atexit, resource, sys\n"
            "def _own():\n"
            "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
            "    print(f'OWN_CPU {r.ru_utime + r.ru_stime:.4f}', file=sys.stderr)\n"
            "atexit.register(_own)\n"
            "from devcheck.cli import main\n"
            "sys.argv[0] = 'devcheck'\n"
            "main()\n")
DEVCHECK = [PY, "-c", _OWN_CPU, "run", "--no-plot", "-i", "0.25"]
ENTRY = Path(PY).with_name("devcheck")  # the console script a user runs


def _job(work: int) -> list[str]:
    code = ("import time\nt = time.perf_counter()\nx = 0\n"
            f"for i in range({work}): x += i * i\n"
            "print(f'{time.perf_counter() - t:.6f}')")
    return [PY, "-c", code]


def job_time(cmd: list[str], own_cpu: list[float] | None = None) -> float:
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    if own_cpu is not None:
        own_cpu += [float(line.split()[1]) for line in res.stderr.splitlines()
                    if line.startswith("OWN_CPU ")]
    return float(res.stdout.strip().splitlines()[0])


def overhead_ratio(reps: int, work: int, out: Path) -> tuple[float, float, float, float]:
    bare, watched, own = [], [], []  # type: ignore[var-annotated]
    for i in range(reps):
        bare.append(job_time(_job(work)))
        watched.append(job_time([*DEVCHECK, "--out", str(out / f"r{i}"), "--", *_job(work)],
                                own))
    return min(bare), min(watched), min(watched) / min(bare), statistics.median(own)


def sampler_cpu(procs: int, seconds: float) -> tuple[float, int, float]:
    """% of one core used by the sampler thread watching ``procs`` sleeping processes,
    its samples, and the one-time CPU cost of opening (imports, nvmlInit)."""
    from devcheck.run.sampler import Sampler

    code = ("import subprocess, sys, time\n"
            "kids = [subprocess.Popen([sys.executable, '-c', "
            f"'import time; time.sleep({seconds + 5})']) for _ in range({procs - 1})]\n"
            f"time.sleep({seconds + 5})")
    child = subprocess.Popen([PY, "-c", code])
    try:
        time.sleep(1.0)  # let the tree form
        sampler = Sampler(child.pid, interval_s=0.25)
        sampler.start()
        sampler.opened.wait(30)
        t0 = time.monotonic()
        time.sleep(seconds)
        sampler.stop()
        elapsed = time.monotonic() - t0
    finally:
        child.kill()
        child.wait()
    return 100.0 * sampler.thread_cpu_s / elapsed, sampler.samples, sampler.open_cpu_s


# devcheck run, printing its own CPU time (interpreter start included) when it starts the job
_CPU_AT_SPAWN = ("import resource, subprocess, sys\n"
                 "_init = subprocess.Popen.__init__\n"
                 "def _spawn(self, *a, **k):\n"
                 "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
                 "    print(f'CPU_AT_SPAWN {r.ru_utime + r.ru_stime:.4f}', file=sys.stderr)\n"
                 "    _init(self, *a, **k)\n"
                 "subprocess.Popen.__init__ = _spawn\n"
                 "from devcheck.cli import main\n"
                 "sys.argv[0] = 'devcheck'\n"
                 "main()\n")


def cpu_before_spawn(reps: int, out: Path) -> tuple[float, float]:
    """devcheck's CPU seconds until it starts the child, vs a bare ``python -c pass``."""
    spawn, bare = [], []
    for i in range(reps):
        res = subprocess.run([PY, "-c", _CPU_AT_SPAWN, "run", "--no-plot", "--out",
                              str(out / f"c{i}"), "--", "true"], capture_output=True, text=True)
        spawn += [float(x.split()[1]) for x in res.stderr.splitlines()
                  if x.startswith("CPU_AT_SPAWN")]
        res = subprocess.run([PY, "-c", "import resource; r = resource.getrusage("
                              "resource.RUSAGE_SELF); print(r.ru_utime + r.ru_stime)"],
                             capture_output=True, text=True)
        bare.append(float(res.stdout))
    return statistics.median(spawn), statistics.median(bare)


def startup_delay(reps: int, out: Path) -> tuple[float, float, float]:
    stamp = [PY, "-c", "import time; print(repr(time.time()))"]
    launcher = [str(ENTRY), "run"] if ENTRY.exists() else [PY, "-m", "devcheck", "run"]
    bare, watched = [], []
    for i in range(reps):
        t = time.time()
        bare.append(float(subprocess.run(stamp, capture_output=True, text=True).stdout) - t)
        t = time.time()
        res = subprocess.run([*launcher, "--no-plot", "--out", str(out / f"s{i}"), "--",
                              *stamp], capture_output=True, text=True)
        watched.append(float(res.stdout.splitlines()[0]) - t)
    b, w = statistics.median(bare), statistics.median(watched)
    return b, w, w - b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=int, default=20_000_000,
                        help="loop iterations of the CPU-bound job (~1 s per 4M here)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        job_time(_job(args.work // 10))  # warm the page cache, untimed
        b, w, ratio, own = overhead_ratio(args.reps, args.work, out)
        print(f"1. CPU-bound job, best of {args.reps}: bare {b:.3f} s, under devcheck run "
              f"{w:.3f} s -> {ratio:.3f}x (target <= 1.03x); devcheck's own CPU for the "
              f"whole run (start, 4 Hz sampling, summary): {own:.3f} s = {own / b:.1%} of "
              "the job")
        for procs in (1, 5):
            pct, n, opening = sampler_cpu(procs, 8.0)
            print(f"2. sampler thread at 4 Hz watching {procs} process(es): {pct:.2f}% of one "
                  f"core over {n} samples (target <= 1%); once at start: {opening:.3f} s "
                  "CPU (psutil/pynvml import, nvmlInit)")
        b, w, delay = startup_delay(max(5, args.reps), out)
        print(f"3. child start after launch, median: bare {b * 1000:.0f} ms, under devcheck "
              f"run {w * 1000:.0f} ms -> +{delay * 1000:.0f} ms (target <= 100 ms)")
        spawn, bare = cpu_before_spawn(max(5, args.reps), out)
        print(f"3b. devcheck's own CPU until the child starts (interpreter start included), "
              f"median: {spawn * 1000:.0f} ms; a bare `python -c pass` uses {bare * 1000:.0f} ms")


if __name__ == "__main__":
    main()
