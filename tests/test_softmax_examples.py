"""The examples run: the learner's script shows its symptoms, the fixed one and the notebook
train with curves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
EXAMPLES = REPO / "examples"


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_learner_script_shows_no_plot_and_nan(fashion_root: str, tmp_path: Path) -> None:
    proc = run("learner_softmax.py", "--epochs", "1", "--lr", "100", "--limit-batches", "40",
               "--data-root", fashion_root, cwd=tmp_path)
    assert "Figure(350x250)" in proc.stdout  # the Animator's display() in a script
    assert proc.returncode != 0 and "AssertionError: nan" in proc.stderr
    assert not list(tmp_path.rglob("*.png"))


def test_fixed_script_trains_and_draws(fashion_root: str, tmp_path: Path) -> None:
    proc = run("learner_softmax_fixed.py", "--epochs", "2", "--limit-batches", "30",
               "--device", "cpu", "--workers", "0", "--data-root", fashion_root,
               "--plot", str(tmp_path / "c.png"), "--predictions", str(tmp_path / "p.png"),
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(f"curves: {tmp_path / 'c.png'}") == 2
    assert (tmp_path / "c.png").is_file() and (tmp_path / "p.png").is_file()


def test_notebook_trains_with_live_curves(fashion_root: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("SOFTMAX_DATA_ROOT", fashion_root)
    monkeypatch.setenv("SOFTMAX_NOTEBOOK_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("SOFTMAX_NOTEBOOK_EPOCHS", "3")
    nb = nbformat.read(EXAMPLES / "softmax_live.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    train_cell = nb.cells[2]
    pngs = [o for o in train_cell.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1, "one display, updated in place (not one figure per epoch)"
    assert pngs[0]["output_type"] == "display_data"
    assert "image/png" in nb.cells[3].outputs[-1]["data"]
    assert (tmp_path / "run" / "last.pt").is_file()
