"""``devcheck explain`` speed and memory, against the anchor `python -c "import torch"`.

Targets (issues 9 and 10): the median time of `devcheck explain` on a 40-line traceback
<= 0.2x the torch import; a 6 MB CI log with the error in the middle matched in <= 1 s;
memory bounded (a 60 MB log costs about what a 6 MB one does); torch never imported.
Every number is measured in this run, as a whole process (start-up included).
Run: .venv/bin/python benchmarks/bench_explain.py   (about half a minute)
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHM = ROOT / "tests" / "data" / "explain" / "linux_shm_exhausted.txt"  # a real 41-line one
_RSS = ("import resource, subprocess, sys; "
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def median_time(cmd: list[str], runs: int) -> float:
    return median_times(cmd, runs)[0]


def median_times(cmd: list[str], runs: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (user + system) of ``cmd``. CPU time is
    what the command costs when the machine is not shared; wall time includes waiting for a
    CPU on a loaded machine (see the load printed first)."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, cwd=ROOT, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def peak_rss_mib(cmd: list[str]) -> tuple[float, int]:
    """Peak resident memory of ``cmd`` (Linux/macOS ru_maxrss) and its exit code."""
    out = subprocess.run([sys.executable, "-c", _RSS, *cmd], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20  # KiB on Linux, B on macOS
    return int(out[0]) * scale, int(out[1])


def imports_torch(args: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "devcheck", *args],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    names = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:")]
    return "torch" in names


def ci_log(path: Path, megabytes: int) -> None:
    """A CI log of ``megabytes`` with one CUDA error in the middle."""
    line = (b"2026-11-30T12:00:00Z [step 12345] loss=0.3456 lr=0.1 grad_norm=1.02 "
            b"throughput=1234.5 samples/s\n")
    half = line * (megabytes * 500_000 // len(line))
    with path.open("wb") as f:
        f.write(half)
        f.write(b"RuntimeError: CUDA error: an illegal memory access was encountered\n")
        f.write(half)


def main() -> None:
    py = sys.executable
    lines = len(SHM.read_text().splitlines())
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"load {os.getloadavg()[0]:.1f}")
    anchor, anchor_cpu = median_times([py, "-c", "import torch"], 5)
    print(f"anchor   python -c 'import torch'               {anchor:6.3f} s wall, "
          f"{anchor_cpu:6.3f} s CPU")
    tb, tb_cpu = median_times([py, "-m", "devcheck", "explain", str(SHM)], 7)
    print(f"explain  {lines}-line traceback                     {tb:6.3f} s wall  = "
          f"{tb / anchor:.2f}x the import (target <= 0.2x); CPU {tb_cpu / anchor_cpu:.2f}x")
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "ci6.log", Path(tmp) / "ci60.log"
        ci_log(small, 6)
        ci_log(big, 60)
        t6, c6 = median_times([py, "-m", "devcheck", "explain", str(small), "--no-here"], 3)
        rss6, rc6 = peak_rss_mib([py, "-m", "devcheck", "explain", str(small), "--no-here"])
        rss60, rc60 = peak_rss_mib([py, "-m", "devcheck", "explain", str(big), "--no-here"])
        print(f"explain  6 MB CI log, error in the middle      {t6:6.3f} s wall, {c6:5.3f} s "
              f"CPU (target <= 1 s; {'matched' if rc6 == 0 else 'NOT matched'})")
        print(f"memory   peak RSS 6 MB log {rss6:5.0f} MiB, 60 MB log {rss60:5.0f} MiB "
              f"({'matched' if rc60 == 0 else 'NOT matched'}; bounded: the input is streamed)")
    torch = "IMPORTS TORCH" if imports_torch(["explain", str(SHM)]) else "torch not imported"
    print(f"imports  devcheck explain: {torch}")


if __name__ == "__main__":
    main()
