"""scripts/gpu-check.sh: syntax, usage errors, step bookkeeping, and a real dry run on this machine.

The bookkeeping tests run the script with a fake interpreter (``PYTHON=<a bash script>``) that
answers every step in milliseconds and fails the steps a test names: the orchestration (go on
after a failure, skip what cannot run, exit status, at most 8 flat files) is what is under
test there. One test then runs the real doctor and the real pytest gate on this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
ARCHIVES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte")
MAIN_STEPS = ("doctor", "doctor-json", "tests", "pitfalls", "train", "predict")

FAKE_PYTHON = r"""#!/usr/bin/env bash
# A stand-in interpreter: quiet, instant, fails when its arguments contain $FAKE_FAIL.
case "$*" in
  -c*nvml*) echo "0, NVIDIA Fake 80GB, driver 555.1"; exit 0 ;;
  -c*torch*) echo "2.5.1+cu124 CUDA 12.4"; exit 0 ;;
  -c*) echo "3.11.0"; exit 0 ;;
esac
echo "fake run: $*"
if [ -n "${FAKE_FAIL:-}" ] && [[ "$*" == *"$FAKE_FAIL"* ]]; then echo "fake failure" >&2; exit 3; fi
case "$*" in *--json*) echo '{"fake": true}' ;; esac
if [[ "$*" == *"softmax train"* ]]; then
  args=("$@")
  for i in "${!args[@]}"; do
    [ "${args[$i]}" = --checkpoint-dir ] && mkdir -p "${args[$((i+1))]}" &&
      touch "${args[$((i+1))]}/last.pt"
    [ "${args[$i]}" = --metrics-json ] && echo '{"epochs": []}' > "${args[$((i+1))]}"
  done
fi
exit 0
"""

needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="Requires bash and coreutils' timeout (Linux runners)")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name in ARCHIVES:
        (folder / f"{name}.gz").write_bytes(b"")
    return folder


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    path = tmp_path / "fake-python"
    path.write_text(FAKE_PYTHON)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def gpu_check(out: Path, data: Path, python: Path | str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": str(python), **env}
    return subprocess.run(["bash", str(SCRIPT), str(out), str(data)], env=full_env,
                          capture_output=True, text=True, timeout=300, check=False)


def table(summary: str) -> dict[str, tuple[str, str]]:
    """step -> (status, exit) from the summary's markdown table."""
    rows = re.findall(r"^\| ([\w:-]+) \| ([^|]+) \| \d+ \| ([^|]+) \| [^|]+ \|$", summary, re.M)
    return {name: (status.strip(), code.strip()) for name, status, code in rows if name != "step"}


def test_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@needs_bash
def test_usage_errors(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "usage: bash scripts/gpu-check.sh OUT_DIR DATA_DIR" in result.stderr
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), str(tmp_path / "nope")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "DATA_DIR" in result.stderr and "train-images-idx3-ubyte.gz" in result.stderr


@needs_bash
def test_all_steps_pass_and_the_output_fits_the_lending_tool(
    tmp_path: Path, data_dir: Path, fake_python: Path
) -> None:
    out = tmp_path / "out"
    result = gpu_check(out, data_dir, fake_python)
    assert result.returncode == 0, result.stderr
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU check on NVIDIA Fake 80GB\n")
    assert "**all steps passed**" in summary and "2.5.1+cu124" in summary
    steps = table(summary)
    assert all(steps[name] == ("passed", "0") for name in MAIN_STEPS)
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert all(len(p.parts) == 1 for p in files) and len(files) <= 8
    assert {"summary.md", "steps.log", "doctor.json", "pitfalls.json",
            "train-metrics.json"} <= {p.name for p in files}
    log = (out / "steps.log").read_text()
    assert "fake run: -m devcheck doctor --require cuda" in log
    assert "--only-gpu --devcheck-require cuda" in log
    assert "-m devcheck pitfalls run --all --device cuda --json" in log
    assert re.search(r"-m softmax train --device cuda --epochs 10 --data-root \S+ ", log)
    assert "-m softmax predict --device cuda" in log
    for bench in sorted((ROOT / "benchmarks").glob("*.py")):
        source = bench.read_text()
        if "__main__" not in source:
            continue
        row = steps[f"bench:{bench.stem}"]
        if re.search(r"(add_argument|option)\(\s*['\"]--device['\"]", source):
            assert row == ("passed", "0") and f"{bench.name} --device cuda" in log
        else:
            assert row[0] == "skipped (no --device option: not a GPU benchmark)"


@needs_bash
def test_a_failed_step_is_recorded_and_the_rest_still_run(
    tmp_path: Path, data_dir: Path, fake_python: Path
) -> None:
    out = tmp_path / "out"
    result = gpu_check(out, data_dir, fake_python, FAKE_FAIL="pitfalls run")
    assert result.returncode == 1
    summary = (out / "summary.md").read_text()
    steps = table(summary)
    assert steps["pitfalls"] == ("FAILED", "3")
    assert steps["train"] == ("passed", "0") and steps["predict"] == ("passed", "0")
    assert "**1 step(s) failed**" in summary and "fake failure" in summary


@needs_bash
def test_predict_is_skipped_with_the_reason_when_train_failed(
    tmp_path: Path, data_dir: Path, fake_python: Path
) -> None:
    out = tmp_path / "out"
    result = gpu_check(out, data_dir, fake_python, FAKE_FAIL="softmax train")
    assert result.returncode == 1
    steps = table((out / "summary.md").read_text())
    assert steps["train"] == ("FAILED", "3")
    assert steps["predict"][0].startswith("skipped (no checkpoint: the train step did not write")


@needs_bash
def test_missing_archives_skip_the_trainer(tmp_path: Path, data_dir: Path, fake_python: Path):
    (data_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    out = tmp_path / "out"
    result = gpu_check(out, data_dir, fake_python)
    steps = table((out / "summary.md").read_text())
    missing = f"missing in {data_dir}: t10k-labels-idx1-ubyte.gz"
    assert steps["train"][0] == f"skipped (no dataset: {missing})"
    assert result.returncode == 0  # skipped for a stated reason, not failed


@needs_bash
def test_a_spent_budget_fails_the_check(tmp_path: Path, data_dir: Path, fake_python: Path):
    out = tmp_path / "out"
    result = gpu_check(out, data_dir, fake_python, GPU_CHECK_BUDGET_S="0")
    assert result.returncode == 1
    steps = table((out / "summary.md").read_text())
    assert steps["doctor"][0] == "NOT RUN (time budget of 0s spent)"


@needs_bash
def test_dry_run_on_this_machine_with_the_real_tools(tmp_path: Path, data_dir: Path) -> None:
    """The real doctor gate and pytest gate; everything else deselected to stay fast.

    On a CPU machine both fail (no CUDA); on a GPU machine both pass, pytest running only
    the plugin's own GPU tests (GPU_CHECK_TESTS), not the whole GPU suite again.
    """
    out = tmp_path / "out"
    result = gpu_check(out, data_dir, sys.executable, GPU_CHECK_STEPS="doctor tests",
                       GPU_CHECK_TESTS="tests/test_pytest_plugin.py")
    summary = (out / "summary.md").read_text()
    steps = table(summary)
    for name in ("pitfalls", "train", "predict"):
        assert steps[name] == ("skipped (not in GPU_CHECK_STEPS)", "-")
    for name in ("doctor", "tests"):
        status, code = steps[name]
        assert (status, code == "0") in {("passed", True), ("FAILED", False)}, steps[name]
    failed = [n for n, (status, _) in steps.items() if status == "FAILED"]
    assert result.returncode == (1 if failed else 0)
    log = (out / "steps.log").read_text()
    if steps["tests"][0] == "FAILED":  # no CUDA here: the gate stops pytest before collecting
        assert "--devcheck-require cuda: no CUDA device passed the live check" in log
        assert "reason: " in log
    if steps["doctor"][0] == "FAILED":
        assert "### doctor" in summary
