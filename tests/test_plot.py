"""Live curves: a PNG per epoch when headless, in-place updates in a notebook; the grid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from softmax.plot import LivePlot, in_notebook, prediction_grid

PNG = b"\x89PNG\r\n\x1a\n"


def test_not_a_notebook_here() -> None:
    assert in_notebook() is False


def test_headless_writes_png_each_epoch(tmp_path: Path) -> None:
    live = LivePlot(tmp_path / "sub" / "curves.png", epochs=3, notebook=False)
    sizes = []
    for epoch in (1, 2, 3):
        path = live.add(epoch, (0.9 / epoch, 0.7 + epoch / 100, 0.69 + epoch / 100))
        assert path == tmp_path / "sub" / "curves.png"
        assert path.read_bytes()[:8] == PNG
        sizes.append(path.stat().st_size)
    assert len(set(sizes)) > 1  # redrawn, not written once
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["curves.png"]


def test_notebook_updates_one_display_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("IPython")
    import IPython.display

    calls: list[tuple[str, object]] = []

    class Handle:
        def update(self, obj: object) -> None:
            calls.append(("update", obj))

    def display(obj: object, display_id: bool = False) -> Handle:
        calls.append(("display", obj))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    live = LivePlot(notebook=True)
    assert live.add(1, (0.8, 0.7, 0.7)) is None
    live.add(2, (0.6, 0.8, 0.8))
    live.add(3, (0.5, 0.82, 0.81))
    assert [c[0] for c in calls] == ["display", "update", "update"]


def test_prediction_grid_marks_wrong(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (6, 784), dtype=torch.uint8)
    out = prediction_grid(images, [0, 1, 2, 3, 4, 5], [0, 1, 9, 3, 4, 0],
                          [str(i) for i in range(10)], tmp_path / "grid.png")
    assert out.read_bytes()[:8] == PNG


_BACKEND_SNIPPET = """
import os, sys
from softmax.plot import LivePlot, file_backend, image_format
if sys.argv[2] == "first":
    print(file_backend())  # as the command line does
path = LivePlot(sys.argv[1], epochs=2, notebook=False).add(1, (0.9, 0.7, 0.69))
assert image_format(sys.argv[1], "--plot") == "png"
import matplotlib
print(file_backend())  # matplotlib is imported: nothing more to do, nothing to say
print(matplotlib.get_backend(), os.environ["MPLBACKEND"], path)
"""


@pytest.mark.parametrize("value,note,backend", [
    ("bogus", "warning: MPLBACKEND='bogus' is not a matplotlib backend", "agg"),
    ("svg", "None", "svg"),
])
@pytest.mark.parametrize("when", ["first", "inside"])
def test_mplbackend_cannot_break_the_images(tmp_path: Path, value: str, note: str,
                                            backend: str, when: str) -> None:
    """matplotlib validates $MPLBACKEND on import: `MPLBACKEND=bogus` made the default
    curves.png fail after epoch 1. An unknown value is replaced with agg (and said so); a
    valid one stays the backend; the variable itself is left as the user set it. In a fresh
    interpreter: this one has imported matplotlib already."""
    out = tmp_path / "c.png"
    proc = subprocess.run([sys.executable, "-c", _BACKEND_SNIPPET, str(out), when],
                          env=dict(os.environ, MPLBACKEND=value), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *notes, last = proc.stdout.splitlines()
    assert len(notes) == (2 if when == "first" else 1) and notes[-1] == "None", notes
    assert notes[0].startswith(note) or when == "inside"
    assert last == f"{backend} {value} {out}"
    assert out.read_bytes()[:8] == PNG
