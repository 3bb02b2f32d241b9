"""matplotlib imported for drawing into files, whatever ``$MPLBACKEND`` says.

Shared by devcheck's ``timeline.png`` and the softmax trainer's curves and predictions:
both draw on Agg canvases, which need no backend, yet matplotlib validates ``$MPLBACKEND``
on its first import and raises on a value it does not know.
"""

from __future__ import annotations

import os
import sys


def file_backend() -> str | None:
    """Import matplotlib so that a bad ``$MPLBACKEND`` cannot break it (called before each
    matplotlib import by the figure code; once matplotlib is imported, it returns None at
    once).

    Why: matplotlib validates ``$MPLBACKEND`` when it is first imported and raises on a
    value it does not know (``MPLBACKEND=bogus``: the default curves.png died after epoch 1
    with a traceback, and ``--plot c.png`` was blamed for it), although these figures draw
    on Agg canvases and need no backend at all. So matplotlib is imported with the variable
    hidden, and the variable is put back (the environment stays the user's). A valid value
    becomes the backend as matplotlib would have made it (a notebook's inline backend, a
    GUI for the user's own pyplot); an unknown one is replaced with agg, and the one-line
    note returned says so (the command line calls this first, and prints it). None when
    nothing was replaced."""
    value = os.environ.get("MPLBACKEND")
    if not value or "matplotlib" in sys.modules:
        return None
    del os.environ["MPLBACKEND"]
    try:
        import matplotlib
        from matplotlib import rcsetup
    finally:
        os.environ["MPLBACKEND"] = value
    try:
        matplotlib.rcParams["backend"] = rcsetup.validate_backend(value)
    except ValueError:
        matplotlib.rcParams["backend"] = "agg"
        return (f"warning: MPLBACKEND={value!r} is not a matplotlib backend (expected e.g. "
                f"agg, qtagg or module://...); images are written with agg. Fix: unset "
                f"MPLBACKEND or set a valid one")
    return None
