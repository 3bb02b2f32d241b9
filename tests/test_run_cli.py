"""The real ``devcheck run`` / ``gpus --watch`` commands against a fake NVML.

A ``pynvml.py`` shim on PYTHONPATH replaces the binding in the devcheck subprocess with the
scenario fake; the fake GPU's process list holds the *real* pid of the job's grandchild
(read from a file the grandchild writes), so the whole path runs for real: the CLI, the
child's session, the /proc tree walk, the attribution, the verdicts, the files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PY = sys.executable
TESTS = Path(__file__).resolve().parent

SHIM = '''
import sys
sys.path.insert(0, {tests!r})
from fakes import fake_pynvml as fk

GiB = 1024**3


class PidFileProcs(list):
    def __iter__(self):
        procs = [fk.FakeProcess(4000000, int(0.5 * GiB))]  # someone else's process
        try:
            procs.append(fk.FakeProcess(int(open({pid_file!r}).read()), int(7.0 * GiB)))
        except (OSError, ValueError):
            pass
        return iter(procs)


sc = fk.one_gpu(name="NVIDIA GeForce RTX 4070", memory_total=8 * GiB,
                memory_used=int(7.7 * GiB), util_gpu=23, processes=PidFileProcs())
sys.modules["pynvml"] = fk.build_module(sc)
'''


def shim_env(tmp_path: Path, pid_file: Path) -> dict[str, str]:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "pynvml.py").write_text(SHIM.format(tests=str(TESTS), pid_file=str(pid_file)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(shim), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def test_run_attributes_a_grandchild_and_prints_gpu_verdicts(tmp_path: Path) -> None:
    pid_file = tmp_path / "gpu-pid"
    job = textwrap.dedent(f"""
        import subprocess, sys
        code = ("import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                "time.sleep(2)")
        sys.exit(subprocess.call([sys.executable, "-c", code]))
    """)
    res = subprocess.run([PY, "-m", "devcheck", "run", "-i", "0.05", "--json", "--out",
                          str(tmp_path / "o"), "--", PY, "-c", job],
                         capture_output=True, text=True, timeout=120,
                         env=shim_env(tmp_path, pid_file))
    assert res.returncode == 0, res.stderr
    assert ("GPU 0 (NVIDIA GeForce RTX 4070): 23% kernel-active, peak memory 7.7 / 8.0 GiB "
            "(the job's processes: 7.0 GiB)") in res.stderr
    assert "memory nearly full (96% at peak)" in res.stderr
    assert "other processes share this GPU" in res.stderr and "pid 4000000" in res.stderr
    assert "rests on: memory.used" in res.stderr
    doc = json.loads(res.stdout.splitlines()[-1])
    gpu = doc["stats"]["gpus"][0]
    assert gpu["job_samples"] > 0 and gpu["job_memory_peak_bytes"] == 7 * 1024**3
    grandchild = int(pid_file.read_text())
    samples = [json.loads(line) for line in (tmp_path / "o" / "timeline.jsonl").open()
               if '"kind":"sample"' in line]
    attributed = [p for s in samples for g in s["gpus"] for p in (g["processes"] or [])
                  if p["pid"] == grandchild]
    assert attributed and all(p["in_job"] for p in attributed)
    assert (tmp_path / "o" / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_gpus_watch_streams_json_until_ctrl_c(tmp_path: Path) -> None:
    env = shim_env(tmp_path, tmp_path / "none")
    proc = subprocess.Popen([PY, "-m", "devcheck", "gpus", "--watch", "--json", "-i", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(3)]  # arrive one by one: flushed
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    docs = [json.loads(x) for x in lines + rest.splitlines()]
    assert all(d["kind"] == "gpus" and d["gpus"][0]["util_gpu_pct"] == 23 for d in docs)
    assert docs[1]["time_unix"] > docs[0]["time_unix"]


def test_gpus_watch_without_a_driver_says_so_once(tmp_path: Path) -> None:
    env = shim_env(tmp_path, tmp_path / "none")  # then make the shim a machine without NVML
    (tmp_path / "shim" / "pynvml.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom fakes import fake_pynvml as fk\n"
        "sys.modules['pynvml'] = fk.build_module(fk.driver_not_loaded())\n")
    res = subprocess.run([PY, "-m", "devcheck", "gpus", "--watch", "-i", "0.05"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines() == ["no NVIDIA GPU here: NVMLError_DriverNotLoaded: "
                                               "DriverNotLoaded"]


def test_gpus_interval_needs_watch_and_a_finite_number() -> None:
    bad = subprocess.run([PY, "-m", "devcheck", "gpus", "--watch", "-i", "nan"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    alone = subprocess.run([PY, "-m", "devcheck", "gpus", "-i", "2"],
                           capture_output=True, text=True, timeout=60)
    assert alone.returncode == 2 and "--watch" in alone.stderr


def test_learner_script_under_devcheck_run_gets_the_cpu_verdict(tmp_path: Path) -> None:
    """The learner's own question, answered on this machine (issue 11's acceptance)."""
    mirror = Path("/usr/share/datasets/fashion-mnist")
    if not (mirror / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no Fashion-MNIST in {mirror} (Debian's dataset-fashion-mnist)")
    script = TESTS.parent / "examples" / "learner_softmax.py"
    res = subprocess.run([PY, "-m", "devcheck", "run", "--no-plot", "--json", "--out",
                          str(tmp_path / "o"), "--", PY, str(script), "--limit-batches", "3",
                          "--epochs", "1", "--data-root", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout.splitlines()[-1])
    if doc["stats"]["gpus"]:  # a GPU machine: the script puts everything on cuda
        assert doc["devices"][0].startswith("GPU ")
    else:
        assert doc["devices"][0] == "no NVIDIA GPU here: the job ran on the CPU"
        assert "[devcheck]   no NVIDIA GPU here: the job ran on the CPU" in res.stderr
        assert doc["stats"]["host"]["processes_peak"] >= 2  # the 4 DataLoader workers came


def test_a_bogus_mplbackend_does_not_cost_the_plot(tmp_path: Path) -> None:
    """matplotlib rejects an unknown $MPLBACKEND at import; a PNG needs no GUI backend, and
    the job still sees the user's variable."""
    out = tmp_path / "o"
    proc = subprocess.run([PY, "-m", "devcheck", "run", "--out", str(out), "--", PY, "-c",
                           "import os; print(os.environ['MPLBACKEND'])"],
                          env=dict(os.environ, MPLBACKEND="bogus"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "bogus\n"
    assert (out / "timeline.png").stat().st_size > 0
    assert "warning" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_full_disk_mid_run_keeps_the_jobs_exit_code_and_summary(tmp_path: Path) -> None:
    """The timeline filling the disk (here ``ulimit -f``) used to end devcheck with exit 1
    and no summary after the job had finished: the job's code and summary must survive."""
    script = (f"ulimit -f 2; exec {PY} -m devcheck run -i 0.01 --no-plot --out o -- "
              f"{PY} -c 'import time; time.sleep(1.5); print(\"job-done\"); raise SystemExit(3)'")
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "job-done\n"
    assert "exit code 3" in proc.stderr and "Traceback" not in proc.stderr
    assert "o/timeline.jsonl is incomplete: the file is larger than this process may write" \
        in proc.stderr
    assert (tmp_path / "o" / "timeline.jsonl").stat().st_size > 0  # what was written is kept
    assert [p.name for p in (tmp_path / "o").iterdir() if ".tmp" in p.name] == []
