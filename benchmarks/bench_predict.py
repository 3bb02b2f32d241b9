"""``softmax predict -n N``: wall time and peak memory as N grows, against ``-n 16``.

    python benchmarks/bench_predict.py                     # -n 16, 1000, 3000, 10000 (~1 min)
    python benchmarks/bench_predict.py --sizes 16 500 --device cuda

Why: one figure with N subplots and constrained layout took 7 minutes at 6 GB for
``-n 3000`` (issue 9). Pages of 128 images keep the cost linear in N. Each size runs as its
own process (as a user runs it), so the anchor ``-n 16`` carries the fixed cost (imports,
checkpoint, data) and ``seconds - anchor`` is the drawing; per 1000 images it should stay
flat as N grows. Peak RSS is the child's own (``wait4``). No timed assertions: the figures
are printed, with the issue's target (-n 10000 in <= 30 s and <= 1 GiB) for comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MiB, last output line) of one ``python -m softmax`` run.

    CPU seconds (user + system) are printed too: on a shared, loaded machine they move far
    less than wall time."""
    env = dict(os.environ, SOFTMAX_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "softmax", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"softmax {' '.join(args)} failed ({proc.returncode}):\n{out}")
    rss_mib = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, rss_mib, out.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--checkpoint", default=None,
                        help="a softmax checkpoint; default: train 1 epoch into a temp folder")
    args = parser.parse_args()
    data = ["--data-root", args.data_root] if args.data_root else []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            run(["train", "--epochs", "1", "--device", args.device, "--checkpoint-dir", tmp,
                 *data])
            checkpoint = str(Path(tmp) / "last.pt")
        common = ["predict", "--checkpoint", checkpoint, "--device", args.device, *data]
        anchor_s, anchor_cpu, anchor_mib, _ = run([*common, "-n", "16", "--out",
                                                   f"{tmp}/a/p.png"])
        print(f"anchor  -n 16: {anchor_s:6.2f} s wall, {anchor_cpu:6.2f} s CPU, peak RSS "
              f"{anchor_mib:7.1f} MiB (imports, checkpoint, data: the fixed cost)")
        print(f"{'n':>7} {'wall s':>7} {'x anchor':>9} {'CPU s':>6} {'x anchor':>9} "
              f"{'drawing CPU s/1000':>19} {'peak MiB':>9} {'+MiB':>6}  output")
        for n in args.sizes:
            seconds, cpu, mib, line = run([*common, "-n", str(n), "--out",
                                           f"{tmp}/{n}/p.png"])
            drawing = max(cpu - anchor_cpu, 0.0)
            print(f"{n:7d} {seconds:7.2f} {seconds / anchor_s:9.2f} {cpu:6.2f} "
                  f"{cpu / anchor_cpu:9.2f} {drawing / n * 1000:19.2f} {mib:9.1f} "
                  f"{mib - anchor_mib:6.1f}  {line.split(';')[0]}")
            if n == 10000:
                ok = seconds <= 30 and mib <= 1024
                print(f"        target -n 10000 <= 30 s and <= 1024 MiB: "
                      f"{'met' if ok else 'NOT met'} on this machine")


if __name__ == "__main__":
    main()
