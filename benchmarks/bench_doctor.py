"""How long ``devcheck doctor`` and ``devcheck gpus`` take, against ``import torch``.

Targets (issues 2 and 9): doctor <= 1.1x the bare torch import (torch is imported once, in
the probe's child process, while the parent probes NVML, the host and the wheel's files),
gpus <= 0.15x (it never imports torch). collect_env is reported for comparison. Every
command runs in a fresh interpreter, in one interleaved run, several repetitions; the
medians are compared. Not a test: it prints numbers (about a minute on 2 idle cores).

    .venv/bin/python benchmarks/bench_doctor.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

PY = sys.executable
COMMANDS: dict[str, list[str]] = {
    "import torch": [PY, "-c", "import torch"],
    "devcheck doctor": [PY, "-m", "devcheck", "doctor"],
    "devcheck doctor --markdown": [PY, "-m", "devcheck", "doctor", "--markdown"],
    "collect_env": [PY, "-m", "torch.utils.collect_env"],
    "devcheck gpus": [PY, "-m", "devcheck", "gpus"],
    "python -c pass": [PY, "-c", "pass"],
}


def once(cmd: list[str]) -> float:
    env = {**os.environ, "NO_COLOR": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    for cmd in COMMANDS.values():  # warm the page cache once, untimed
        once(cmd)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.reps):  # interleaved, so drift in machine load hits all alike
        for name, cmd in COMMANDS.items():
            times[name].append(once(cmd))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    anchor = med["import torch"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.reps} reps, medians")
    print(f"{'command':<26}{'median s':>10}{'min s':>9}{'/ import torch':>16}")
    for name, ts in times.items():
        print(f"{name:<26}{med[name]:>10.3f}{min(ts):>9.3f}{med[name] / anchor:>15.2f}x")
    print()
    doctor = med["devcheck doctor"] / anchor
    gpus = med["devcheck gpus"] / anchor
    print(f"doctor / import torch      = {doctor:.2f}  (target <= 1.10: "
          f"{'met' if doctor <= 1.10 else 'MISSED'})")
    print(f"doctor / collect_env       = {med['devcheck doctor'] / med['collect_env']:.2f}")
    print(f"collect_env / import torch = {med['collect_env'] / anchor:.2f}")
    print(f"gpus / import torch        = {gpus:.3f} (target <= 0.15: "
          f"{'met' if gpus <= 0.15 else 'MISSED'})")
    best = {name: min(ts) for name, ts in times.items()}
    anchor_best = best["import torch"]
    print(f"on best runs (less load noise): doctor {best['devcheck doctor'] / anchor_best:.2f}, "
          f"gpus {best['devcheck gpus'] / anchor_best:.3f}")
    try:
        load = os.getloadavg()[0]
        print(f"load average during the run: {load:.2f} on {os.cpu_count()} CPUs")
    except OSError:
        pass


if __name__ == "__main__":
    main()
