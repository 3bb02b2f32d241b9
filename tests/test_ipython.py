"""``%load_ext devcheck`` in a real IPython kernel (nbclient + ipykernel)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from devcheck.integrations import ipython as hook  # noqa: E402


def _kernel_dir(tmp_path: Path) -> Path:
    """A kernelspec that runs *this* interpreter (the venv's), living under tmp_path only."""
    spec = tmp_path / "jupyter" / "kernels" / "devcheck-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "devcheck test", "language": "python",
    }))
    return tmp_path / "jupyter"


def _text(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif out.get("output_type") == "error":
            parts.append(out["ename"] + ": " + out["evalue"] + "\n" + "\n".join(out["traceback"]))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def test_notebook_hook_in_a_real_kernel(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_dir(tmp_path)))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    cells = [
        "%load_ext devcheck",
        "import torch\nw = torch.ones(3, requires_grad=True)\nw.numpy()",  # a real device error
        "{}['label']",  # unrelated: left alone
        "raise RuntimeError(\"Expected a 'cuda' device type for generator but found 'cpu'\")",
        "%unload_ext devcheck",
        "w.numpy()",  # after unload: plain traceback again
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(nb, kernel_name="devcheck-test", timeout=120,
                                     allow_errors=True, resources={"metadata": {
                                         "path": str(tmp_path)}})
    client.execute()
    out = [_text(c) for c in nb.cells]

    real = out[1]
    assert "Can't call numpy() on Tensor that requires grad" in real  # traceback untouched
    assert "[devcheck] Most likely: numpy_on_requires_grad" in real
    assert real.index("requires grad") < real.index("[devcheck]")  # explanation under it
    assert nb.cells[1].outputs[0]["output_type"] in ("error", "stream")

    assert "KeyError" in out[2] and "[devcheck]" not in out[2]

    assert "[devcheck] Most likely: default_device_sampler_generator" in out[3]
    assert "num_workers is irrelevant" in out[3]

    assert "requires grad" in out[5] and "[devcheck]" not in out[5]
    # the cell still counts as failed: nbclient recorded an error output
    assert any(o.get("output_type") == "error" for o in nb.cells[1].outputs)


class FakeShell:
    """Just the two attributes and the one method set_custom_exc touches."""

    def __init__(self) -> None:
        self.custom_exceptions: tuple[type, ...] = ()
        self.shown: list[Any] = []

    def set_custom_exc(self, exc_tuple: tuple[type, ...], handler: Any) -> None:
        self.custom_exceptions = exc_tuple
        self.CustomTB = handler

    def showtraceback(self, exc_tuple: Any, tb_offset: int | None = None,
                      running_compiled_code: bool = False) -> None:
        self.shown.append(exc_tuple)


def test_load_unload_restores_a_previous_handler(capsys: pytest.CaptureFixture[str]) -> None:
    shell = FakeShell()
    previous = object()
    shell.custom_exceptions, shell.CustomTB = (ValueError,), previous
    hook.load_ipython_extension(shell)
    hook.load_ipython_extension(shell)  # twice is harmless
    assert shell.custom_exceptions == (Exception,)
    exc = RuntimeError("Found no NVIDIA driver on your system.")
    shell.CustomTB(shell, RuntimeError, exc, None)
    assert shell.shown == [(RuntimeError, exc, None)]  # traceback shown first, as is
    assert "[devcheck] Most likely: no_driver" in capsys.readouterr().out
    shell.CustomTB(shell, KeyError, KeyError("x"), None)
    assert capsys.readouterr().out == ""  # unrelated: nothing added
    hook.unload_ipython_extension(shell)
    assert shell.custom_exceptions == (ValueError,) and shell.CustomTB is previous
