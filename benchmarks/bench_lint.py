"""How fast ``devcheck lint`` is, against TorchFix and against ``import torch``.

Targets (issue 13): files per second >= 5x TorchFix 0.7.0's on the same files in the same
run, and a 20-file project linted in <= 0.2x the time of ``python -c "import torch"``.
Every command runs end to end in a fresh process (what a user or pre-commit pays),
interleaved, several repetitions; medians are compared. Not a test: it prints numbers.

TorchFix lives in its own environment (it pins libcst and must not enter .venv):

    python3 -m venv /tmp/torchfix-venv && /tmp/torchfix-venv/bin/pip install torchfix==0.7.0
    DEVCHECK_TORCHFIX=/tmp/torchfix-venv/bin/torchfix .venv/bin/python benchmarks/bench_lint.py

Without DEVCHECK_TORCHFIX (or ``torchfix`` on PATH) the comparison is skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
# Real PyTorch training scripts: the learner's (broken and fixed), public examples. Small on
# purpose: TorchFix needs seconds per file on a loaded 2-core machine, and this must stay
# under a minute.
CORPUS_DIRS = ("examples", "tests/data/lint/public")


def corpus() -> list[Path]:
    files: list[Path] = []
    for d in CORPUS_DIRS:
        files += sorted((ROOT / d).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def once(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of the process and every helper it waited for.

    CPU time is the load-independent figure on a shared machine (TorchFix runs a process
    pool; RUSAGE_CHILDREN counts its workers too)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   cwd=ROOT, env={**os.environ, "NO_COLOR": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def medians(commands: dict[str, list[str]], reps: int) -> dict[str, tuple[float, float]]:
    for cmd in commands.values():  # warm the page cache, untimed
        once(cmd)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(reps):  # interleaved: drift in machine load hits all alike
        for name, cmd in commands.items():
            times[name].append(once(cmd))
    return {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
            for name, ts in times.items()}


def project_of_20(tmp: Path) -> Path:
    """A 20-file project: the public examples, the learner's scripts, trainer modules."""
    sources = sorted((ROOT / "tests/data/lint/public").glob("*.py")) + [
        ROOT / "examples/learner_softmax.py", ROOT / "examples/learner_softmax_fixed.py",
    ] + sorted((ROOT / "softmax").glob("*.py"))
    sources = [s for s in sources if s.exists()]
    proj = tmp / "project"
    proj.mkdir()
    for i in range(20):
        src = sources[i % len(sources)]
        shutil.copy(src, proj / f"m{i:02d}_{src.name}")
    return proj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    files = [str(f.relative_to(ROOT)) for f in corpus()]
    lint = [PY, "-m", "devcheck", "lint", "--ignore", "no_cpu_fallback"]
    torchfix = os.environ.get("DEVCHECK_TORCHFIX") or shutil.which("torchfix")
    commands = {"devcheck lint (corpus)": [*lint, *files]}
    if torchfix:
        commands["torchfix (corpus)"] = [torchfix, *files]
    with tempfile.TemporaryDirectory() as tmp:
        proj = project_of_20(Path(tmp))
        commands["devcheck lint (20-file project)"] = [*lint, str(proj)]
        commands["python -c 'import torch'"] = [PY, "-c", "import torch"]
        med = medians(commands, args.reps)
    n = len(files)
    print(f"corpus: {n} files ({sum((ROOT / f).stat().st_size for f in files) // 1024} KiB) "
          f"from {', '.join(CORPUS_DIRS)}; {args.reps} interleaved runs, medians; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, (wall, cpu) in med.items():
        rate = f"  {n / wall:7.1f} files/s" if "corpus" in name else ""
        print(f"  {name:34s} wall {wall * 1000:8.1f} ms  cpu {cpu * 1000:8.1f} ms{rate}")
    if torchfix:
        (dw, dc), (tw, tc) = med["devcheck lint (corpus)"], med["torchfix (corpus)"]
        print(f"devcheck lint vs TorchFix, files per second: {tw / dw:.1f}x wall-clock, "
              f"{tc / dc:.1f}x CPU time  (target >= 5x)")
    else:
        print("TorchFix comparison skipped: set DEVCHECK_TORCHFIX to a torchfix 0.7.0 "
              "executable (see this script's docstring)")
    (pw, pc), (iw, ic) = med["devcheck lint (20-file project)"], med["python -c 'import torch'"]
    print(f"20-file project vs import torch: {pw / iw:.3f}x wall-clock, {pc / ic:.3f}x CPU "
          "time  (target <= 0.2x)")


if __name__ == "__main__":
    main()
