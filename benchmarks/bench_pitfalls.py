"""Pitfall lab and explain speed, against the anchor `python -c "import torch"`.

Target (issues 4, 8): `devcheck pitfalls run --all --device cpu` <= 10x the torch import;
`explain`, `pitfalls list` and `pitfalls show` never import torch (checked with
-X importtime, not assumed). Run: .venv/bin/python benchmarks/bench_pitfalls.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEARNER = ROOT / "tests" / "data" / "explain" / "learner_windows_notebook.txt"


def timed(cmd: list[str], stdin: bytes | None = None
          ) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    start = time.perf_counter()
    done = subprocess.run(cmd, input=stdin, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start, done


def median_time(cmd: list[str], runs: int, stdin: bytes | None = None) -> tuple[float, bytes]:
    times, out = [], b""
    for _ in range(runs):
        t, done = timed(cmd, stdin)
        times.append(t)
        out = done.stdout
    return statistics.median(times), out


def imports_torch(args: list[str], stdin: bytes | None = None) -> bool:
    _, done = timed([sys.executable, "-X", "importtime", "-m", "devcheck", *args], stdin)
    names = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines()
             if line.startswith("import time:")]
    return "torch" in names


def main() -> None:
    py = sys.executable
    anchor, _ = median_time([py, "-c", "import torch"], 5)
    sweep, out = median_time([py, "-m", "devcheck", "pitfalls", "run", "--all", "--device",
                              "cpu", "--json"], 3)
    summary = json.loads(out)["summary"]
    one, _ = median_time([py, "-m", "devcheck", "pitfalls", "run", "numpy_on_requires_grad",
                          "--device", "cpu"], 3)
    total = sum(summary[k] for k in ("passed", "skipped", "failed"))
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"anchor  python -c 'import torch'                 {anchor:6.2f} s")
    print(f"sweep   devcheck pitfalls run --all --device cpu  {sweep:6.2f} s   "
          f"= {sweep / anchor:4.1f}x the import (target <= 10x); {total} pitfalls: "
          f"{summary['passed']} passed, {summary['skipped']} skipped, "
          f"{summary['failed']} failed")
    print(f"one     devcheck pitfalls run ID --device cpu     {one:6.2f} s   "
          f"= {one / anchor:4.1f}x the import (zygote start + 2 phases)")
    big = (LEARNER.read_bytes() * 10) + os.urandom(2_000_000) + b"x" * 8_000_000 \
        + LEARNER.read_bytes()
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
        f.write(big)
    cases = [
        ("explain learner traceback", ["explain", str(LEARNER)], None),
        ("explain 10 MB hostile input", ["explain", f.name], None),
        ("explain - (stdin)", ["explain", "-"], LEARNER.read_bytes()),
        ("pitfalls list", ["pitfalls", "list"], None),
        ("pitfalls show ID", ["pitfalls", "show", "default_device_sampler_generator"], None),
    ]
    for label, args, stdin in cases:
        t, _ = median_time([py, "-m", "devcheck", *args], 5, stdin)
        torch = "IMPORTS TORCH" if imports_torch(args, stdin) else "torch not imported"
        print(f"{label:30} {t:6.3f} s  ({t / anchor:4.2f}x the import; {torch})")
    os.unlink(f.name)


if __name__ == "__main__":
    main()
