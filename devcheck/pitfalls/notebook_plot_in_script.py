"""Notebook display calls (d2l's Animator) run from a plain script."""

from __future__ import annotations

import io
import sys
from typing import TYPE_CHECKING

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure() -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.5, 2.5))  # d2l's default figsize
    ax.plot([1, 2, 3], [0.9, 0.6, 0.5])
    return fig


def reproduce(device: str) -> None:
    try:
        from IPython import display
    except ImportError as exc:
        raise Skip("IPython is not installed (d2l's Animator needs it)") from exc
    fig = _figure()
    out, saved = io.StringIO(), sys.stdout
    sys.stdout = out
    try:  # what d2l's Animator.add does every epoch
        display.display(fig)
        display.clear_output(wait=True)
    finally:
        sys.stdout = saved
    printed = [ln.strip("\x1b[2K\r") for ln in out.getvalue().splitlines()
               if "Figure(" in ln or "<Figure size" in ln]
    if printed:
        raise RuntimeError(f"display() outside a kernel printed {printed[0]} instead of "
                           "drawing the figure")


def fixed(device: str) -> str:
    fig = _figure()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    if buf.tell() == 0:
        raise RuntimeError("nothing written")
    return f"figure written to a PNG ({buf.tell()} bytes)"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="notebook_plot_in_script",
    title="d2l's Animator in a script: figures print as text, no window",
    needs=("cpu", "cuda", "mps"),
    symptoms=(
        Symptom(r"<Figure size \d+x\d+ with \d+ Axes>", "<figure size",
                "<Figure size 350x250 with 1 Axes>", variant="IPython terminal (repr)"),
        Symptom(r"(?<![\w.])Figure\(\d+x\d+\)", "figure(", "Figure(350x250)",
                weight=0.8, variant="plain python: display() prints str(fig)"),
        Symptom(r"FigureCanvasAgg is non-interactive, and thus cannot be shown",
                "figurecanvasagg is non-interactive", "UserWarning: FigureCanvasAgg is "
                "non-interactive, and thus cannot be shown", weight=0.8),
    ),
    mechanism=(
        "IPython.display.display() and clear_output() draw only inside a kernel; in a "
        "plain Python process display() prints the figure's repr, and matplotlib may be on "
        "the non-interactive Agg backend (no display, SSH, CI)."
    ),
    source="IPython/core/display_functions.py display (no kernel: print(repr(obj))); "
    "matplotlib/backend_bases.py (Agg cannot show)",
    fixes=(
        Fix("In scripts, write figures to files (or call plt.show() once at the end)",
            "fig.savefig('curves.png')"),
        Fix("Use a plotter that detects where it runs: softmax.plot.LivePlot redraws in "
            "a notebook and rewrites a PNG in a script",
            "from softmax.plot import LivePlot\n"
            "plot = LivePlot('curves.png', epochs=num_epochs)\n"
            "plot.add(epoch + 1, (train_loss, train_acc, test_acc))  # returns the PNG path"),
    ),
    hints=("Animator", "display", "matplotlib"),
)
