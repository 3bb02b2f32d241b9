"""The notebook hook lints the cell that raised: one extra line under the explanation."""

from __future__ import annotations

import json
import linecache
import sys
from pathlib import Path
from types import TracebackType

import pytest

from devcheck.lint.links import cell_hint, hint_for_exception, lint_cells


def _raise_from_cells(cells: dict[str, str], entry: str) -> TracebackType:
    """Run code registered under IPython-style cell file names; return the traceback."""
    ns: dict[str, object] = {}
    for name, src in cells.items():
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        exec(compile(src, name, "exec"), ns)  # noqa: S102 - test cells, written here
    try:
        exec(compile(entry, "<ipython-input-9-0000>", "exec"), ns)  # noqa: S102
    except RuntimeError as exc:
        assert exc.__traceback__ is not None
        return exc.__traceback__
    raise AssertionError("did not raise")


def test_hint_names_the_rule_in_the_deepest_cell() -> None:
    load_cell = ("def load_ckpt(path):\n"
                 "    raise RuntimeError('Attempting to deserialize object on a CUDA device')\n"
                 "    return torch.load(path, weights_only=True)\n")
    name = "/tmp/ipykernel_42/1234.py"
    tb = _raise_from_cells({name: "import torch\n" + load_cell}, "load_ckpt('m.pt')\n")
    history = ["", "import torch", load_cell.rstrip("\n"), "load_ckpt('m.pt')"]
    # The cell text as IPython cached it includes the import: not found in history, so it
    # is linted as the cell that raised, after every earlier cell.
    hint = hint_for_exception(history, tb, ["gpu_checkpoint_on_cpu"])
    assert hint is not None
    assert hint.startswith("devcheck lint, the cell that raised line 4: gpu_checkpoint_on_cpu:")
    assert "map_location" in hint


def test_hint_uses_the_history_index_and_earlier_cells() -> None:
    cells = ["", "import torch\ntorch.set_default_device('cuda')",
             "from torch.utils.data import DataLoader\nloader = DataLoader(ds, shuffle=True)"]
    assert cell_hint(cells, 2, label="In [2]") is not None
    assert "default_device_sampler_generator" in (cell_hint(cells, 2) or "")
    assert cell_hint(["", "x = 1"], 1) is None
    by_cell = {(f.cell, f.rule) for f in lint_cells(cells)}
    assert by_cell == {(2, "no_cpu_fallback"), (3, "default_device_sampler_generator")}


def test_no_cell_frames_no_hint() -> None:
    try:
        raise RuntimeError("x")
    except RuntimeError as exc:
        assert hint_for_exception(["", "x"], exc.__traceback__) is None


nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_in_a_real_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ipykernel")
    spec = tmp_path / "jupyter" / "kernels" / "devcheck-lint-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "devcheck lint test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the kernel must not see a GPU
    cells = [
        "%load_ext devcheck",
        # a checkpoint as a GPU run writes it (storages tagged cuda:0)
        "import io, torch\nimport torch.serialization as ser\nbuf = io.BytesIO()\n"
        "orig = ser.location_tag\nser.location_tag = lambda s: 'cuda:0'\n"
        "torch.save({'w': torch.zeros(2)}, buf)\nser.location_tag = orig",
        "def load_ckpt(b):\n    b.seek(0)\n    return torch.load(b, weights_only=True)",
        "state = load_ckpt(buf)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, kernel_name="devcheck-lint-test", timeout=120,
                            allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for o in nb.cells[3].outputs
                     if o.get("output_type") == "stream")
    assert "[devcheck] Most likely: gpu_checkpoint_on_cpu" in text
    assert "[devcheck] devcheck lint, In [3] line 3: gpu_checkpoint_on_cpu:" in text
