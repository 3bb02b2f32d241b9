"""Live training curves and the prediction grid, for notebooks, terminals and headless runs.

The book's ``Animator`` calls IPython's ``display``/``clear_output``: in a script that prints
``<Figure size 350x250 with 1 Axes>`` per epoch and shows nothing (the learner's "I see no
plot"). ``LivePlot`` asks where it runs: inside a Jupyter kernel it updates one displayed
figure in place; anywhere else it rewrites a PNG file each epoch and returns its path.
Figures are built with matplotlib's object API on an Agg canvas, so no GUI backend, no
``pyplot`` global state, and the same code runs on a server without a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where ``display`` reaches a frontend), False elsewhere."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _figure(figsize: tuple[float, float],
            layout: Literal["constrained", "tight"] | None = None) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save_atomic(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


class LivePlot:
    """Train loss, train accuracy and test accuracy against epochs, redrawn each epoch."""

    LEGEND = ("train loss", "train acc", "test acc")
    FORMATS = ("-", "m--", "g-.")

    def __init__(self, path: str | Path | None = None, *, epochs: int | None = None,
                 notebook: bool | None = None, title: str = "") -> None:
        self.notebook = in_notebook() if notebook is None else notebook
        self.path = Path(path) if path is not None else None
        self.epochs, self.title = epochs, title
        self.x: list[float] = []
        self.ys: list[list[float]] = [[], [], []]
        self._handle: Any = None

    def add(self, epoch: float, values: Sequence[float]) -> Path | None:
        """Add one point per curve and redraw; returns the PNG written, if any."""
        self.x.append(epoch)
        for ys, v in zip(self.ys, values, strict=True):
            ys.append(float(v))
        fig = self.draw()
        if self.notebook:
            import io

            from IPython.display import Image, display

            buffer = io.BytesIO()  # PNG bytes: no dependence on the kernel's matplotlib backend
            fig.savefig(buffer, format="png", dpi=100)
            image = Image(data=buffer.getvalue(), format="png")
            if self._handle is None:
                self._handle = display(image, display_id=True)
            else:
                self._handle.update(image)
        if self.path is not None:
            _save_atomic(fig, self.path)
            return self.path
        return None

    def draw(self) -> Any:
        fig = _figure((5.0, 3.5))
        ax = fig.add_subplot()
        for ys, fmt, label in zip(self.ys, self.FORMATS, self.LEGEND, strict=True):
            ax.plot(self.x, ys, fmt, label=label)
        ax.set_xlabel("epoch")
        ax.set_xlim(1, max(self.epochs or 1, len(self.x), 2))
        ax.set_ylim(0.0, 1.0)
        ax.grid(True)
        ax.legend()
        if self.title:
            ax.set_title(self.title)
        fig.tight_layout()
        return fig


def prediction_grid(images: torch.Tensor, labels: Sequence[int], preds: Sequence[int],
                    classes: Sequence[str], out: str | Path, *, cols: int = 8) -> Path:
    """The book's ``predict_ch3`` picture: each image titled true/predicted, wrong ones red.

    ``images`` may live on any device: it is copied to the host here, once, for drawing.
    """
    images = images.detach().to("cpu", torch.float32).reshape(-1, 28, 28)
    n = len(images)
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig = _figure((1.5 * cols, 1.9 * rows + 0.4), layout="constrained")
    wrong = 0
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[i].numpy(), cmap="gray")
        ok = int(labels[i]) == int(preds[i])
        wrong += not ok
        ax.set_title(f"{classes[int(labels[i])]}\n{'' if ok else 'X '}{classes[int(preds[i])]}",
                     fontsize=7, color="black" if ok else "red")
        ax.set_xticks([])
        ax.set_yticks([])
        if not ok:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2)
    fig.suptitle(f"true / predicted ({wrong} of {n} wrong, marked X in red)", fontsize=9)
    path = Path(out)
    _save_atomic(fig, path)
    return path
