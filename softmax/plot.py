"""Live training curves and the prediction grid, for notebooks, terminals and headless runs.

The book's ``Animator`` calls IPython's ``display``/``clear_output``: in a script that prints
``<Figure size 350x250 with 1 Axes>`` per epoch and shows nothing (the learner's "I see no
plot"). ``LivePlot`` asks where it runs: inside a Jupyter kernel it updates one displayed
figure in place; anywhere else it rewrites a PNG file each epoch and returns its path.
Figures are built with matplotlib's object API on an Agg canvas, so no GUI backend, no
``pyplot`` global state, and the same code runs on a server without a display; a
``$MPLBACKEND`` that matplotlib does not know cannot stop them either (:func:`file_backend`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from devcheck.fileio import atomic_path
from devcheck.mplbackend import file_backend


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
    file_backend()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def supported_formats() -> tuple[str, ...]:
    """File suffixes matplotlib can write here (pgf needs a LaTeX install: left out)."""
    file_backend()
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(f for f in FigureCanvasBase.get_supported_filetypes() if f != "pgf"))


def image_format(path: str | Path, option: str = "--out") -> str:
    """The image format named by ``path``'s suffix, checked by a real (tiny) save.

    Called before any work: matplotlib picks the format from the suffix, and a name like
    ``curves.txt``, ``last.pt`` or ``predictions`` used to fail only after the first epoch.
    Raises ValueError, one line naming the option, the name and the formats expected."""
    import io

    suffix = Path(path).suffix.lower().lstrip(".")
    formats = supported_formats()
    expected = (f"expected a file name ending in one of {', '.join('.' + f for f in formats)}"
                f" (e.g. {Path(path).stem or 'out'}.png)")
    if not suffix:
        raise ValueError(f"{option} {path}: the name has no suffix to say the image format; "
                         f"{expected}")
    if suffix not in formats:
        raise ValueError(f"{option} {path}: matplotlib cannot write format {suffix!r}; "
                         f"{expected}")
    try:
        _figure((0.5, 0.5)).savefig(io.BytesIO(), format=suffix)
    except Exception as exc:  # e.g. a Pillow built without webp/avif support
        raise ValueError(f"{option} {path}: format {suffix!r} fails here "
                         f"({type(exc).__name__}: {str(exc)[:80]}); {expected}") from None
    return suffix


def _save_atomic(fig: Any, path: Path, what: str = "image") -> None:
    """Through devcheck.fileio: the temporary keeps the real suffix, the format is explicit,
    and a failure removes it and names ``path``."""
    fmt = path.suffix.lower().lstrip(".") or "png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, what) as tmp:
        fig.savefig(tmp, dpi=100, format=fmt)


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
            _save_atomic(fig, self.path, "plot")
            return self.path
        return None

    def draw(self) -> Any:
        fig = _figure((5.0, 3.5))
        ax = fig.add_subplot()
        for ys, fmt, label in zip(self.ys, self.FORMATS, self.LEGEND, strict=True):
            ax.plot(self.x, ys, fmt, label=label)
        ax.set_xlabel("epoch")
        ax.set_xlim(1, max(self.epochs or 1, len(self.x), 2))
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: 1, 2, 3, not 1.25
        ax.set_ylim(0.0, 1.0)
        ax.grid(True)
        ax.legend()
        if self.title:
            ax.set_title(self.title)
        fig.tight_layout()
        return fig


PAGE_COLS = 8
PAGE_ROWS = 16  # at most 128 images a page (960 x 2000 pixels)
_SCALE = 3  # each 28x28 image drawn at 84x84 pixels
_IMG = 28 * _SCALE
_TITLE_H = 26  # two lines of 7-point text at 100 dpi
_CELL_W, _CELL_H = _IMG + 36, _IMG + _TITLE_H + 10
_HEADER_H, _MIN_W = 30, 520
_RED = (217, 0, 0)


@functools.lru_cache(maxsize=512)
def _text_pixels(text: str, color: str, width: int, height: int, fontsize: float) -> Any:
    """``text`` drawn by matplotlib, centred on white, as an RGB uint8 array.

    Why pixels: a page holds up to 128 titles but Fashion-MNIST has only 10 classes, so at
    most 100 distinct true/predicted titles exist; each is drawn once and pasted, instead of
    laying out 128 text artists (and 128 subplots) per page."""
    import numpy as np

    file_backend()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=fontsize, color=color,
             linespacing=1.05)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _page_pixels(images: torch.Tensor, labels: Sequence[int], preds: Sequence[int],
                 classes: Sequence[str], title: str, cols: int) -> Any:
    """One page as an RGB uint8 array: titles, images (x3), a red frame round wrong ones."""
    import numpy as np

    n = len(images)
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    width = max(cols * _CELL_W, _MIN_W)
    page = np.full((_HEADER_H + rows * _CELL_H, width, 3), 255, dtype=np.uint8)
    page[:_HEADER_H] = _text_pixels(title, "black", width, _HEADER_H, 9)
    big = images.repeat_interleave(_SCALE, 1).repeat_interleave(_SCALE, 2).numpy()
    for i in range(n):
        true, pred = classes[int(labels[i])], classes[int(preds[i])]
        wrong = true != pred
        y0 = _HEADER_H + (i // cols) * _CELL_H
        x0 = (i % cols) * _CELL_W
        page[y0:y0 + _TITLE_H, x0:x0 + _CELL_W] = _text_pixels(
            f"{true}\n{'X ' + pred if wrong else pred}", "red" if wrong else "black",
            _CELL_W, _TITLE_H, 7)
        top, left = y0 + _TITLE_H + 3, x0 + (_CELL_W - _IMG) // 2
        if wrong:
            page[top - 2:top + _IMG + 2, left - 2:left + _IMG + 2] = _RED
        page[top:top + _IMG, left:left + _IMG] = big[i][..., None]
    return page


_PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF",
                "webp": "WEBP", "gif": "GIF"}


def _save_pixels(page: Any, path: Path, what: str) -> None:
    """Write the array 1:1 in the format ``path``'s suffix names.

    Raster formats go straight to Pillow (matplotlib's own path resamples the page even at
    scale 1, which cost most of a page's time); vector formats embed it through a figure."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt in _PIL_FORMATS:
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, what) as tmp:
            Image.fromarray(page).save(tmp, format=_PIL_FORMATS[fmt])
        return
    height, width = page.shape[:2]
    fig = _figure((width / 100, height / 100))
    fig.figimage(page, 0, 0, origin="upper")
    _save_atomic(fig, path, what)


def page_paths(out: str | Path, pages: int) -> list[Path]:
    """``predictions.png`` for one page; ``predictions-01.png`` ... for several."""
    out = Path(out)
    if pages <= 1:
        return [out]
    width = len(str(pages))
    return [out.with_name(f"{out.stem}-{i:0{width}d}{out.suffix}") for i in range(1, pages + 1)]


def prediction_pages(images: torch.Tensor, labels: Sequence[int], preds: Sequence[int],
                     classes: Sequence[str], out: str | Path, *, cols: int = PAGE_COLS,
                     per_page: int = PAGE_COLS * PAGE_ROWS) -> list[Path]:
    """The book's ``predict_ch3`` picture for any number of images, ``per_page`` a file.

    Each image is titled true/predicted, wrong ones in red with an X and a red frame. Time
    and memory grow linearly with the number of images (about one page at a time is held).
    ``images`` may live on any device: it is copied to the host here, once."""
    host = images.detach().to("cpu").reshape(-1, 28, 28)
    if host.is_floating_point():  # 0..1 (ToTensor) or 0..255: pixels, as imshow would
        scale = 255.0 if len(host) and float(host.max()) <= 1.0 else 1.0
        host = (host * scale).round().clamp(0, 255)
    host = host.to(torch.uint8)
    n = len(host)
    total_wrong = sum(int(a) != int(b) for a, b in zip(labels, preds, strict=True))
    starts = list(range(0, n, per_page)) or [0]
    paths = page_paths(out, len(starts))
    for page, (start, path) in enumerate(zip(starts, paths, strict=True), 1):
        stop = min(start + per_page, n)
        wrong = sum(int(labels[i]) != int(preds[i]) for i in range(start, stop))
        where = f"; page {page} of {len(paths)}, images {start + 1}-{stop} of {n}, " \
                f"{total_wrong} wrong in all" if len(paths) > 1 else ""
        title = f"true / predicted ({wrong} of {stop - start} wrong, marked X in red{where})"
        page_pixels = _page_pixels(host[start:stop], labels[start:stop], preds[start:stop],
                                   classes, title, cols)
        _save_pixels(page_pixels, path, "predictions")
    return paths


def prediction_grid(images: torch.Tensor, labels: Sequence[int], preds: Sequence[int],
                    classes: Sequence[str], out: str | Path, *, cols: int = PAGE_COLS) -> Path:
    """One page of :func:`prediction_pages` (up to 128 images): the book's picture."""
    if len(images) > PAGE_COLS * PAGE_ROWS:
        raise ValueError(f"prediction_grid: {len(images)} images; expected at most "
                         f"{PAGE_COLS * PAGE_ROWS} on one page. Fix: use prediction_pages")
    return prediction_pages(images, labels, preds, classes, out, cols=cols)[0]
