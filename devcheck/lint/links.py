"""From a runtime error back to the source: lint the notebook cell that raised.

The IPython hook calls :func:`hint_for_exception` after explaining an error: it finds the
deepest traceback frame that belongs to a notebook cell, lints every cell run so far as one
notebook (so a ``set_default_device`` two cells earlier counts), and returns one line when
a rule fires on that cell. Pure apart from reading IPython's ``linecache`` entries.
"""

from __future__ import annotations

import json
import linecache
import re
from collections.abc import Iterable, Sequence
from types import TracebackType

from devcheck.lint import RULES, Finding
from devcheck.lint.engine import lint_source
from devcheck.lint.source import read_notebook

# ipykernel: /tmp/ipykernel_1234/3456789.py ; plain IPython: <ipython-input-7-abc>
_CELL_FILE = re.compile(r"ipykernel_\d+[/\\]\d+\.py$|^<ipython-input-\d+-[0-9a-f]+>$")


def lint_cells(cells: Sequence[str]) -> list[Finding]:
    """Findings for cells run in this order in one kernel (``cell`` = 1-based position)."""
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [],
                     "execution_count": None, "source": c} for c in cells],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    src = read_notebook("<notebook>", json.dumps(nb).encode("utf-8"))
    return lint_source(src, RULES).findings


def _cell_sources(tb: TracebackType | None) -> list[str]:
    """Sources of the notebook cells in the traceback, outermost first."""
    out: list[str] = []
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if _CELL_FILE.search(name):
            text = "".join(linecache.getlines(name))
            if text and (not out or out[-1] != text):
                out.append(text)
        tb = tb.tb_next
    return out


def cell_hint(cells: Sequence[str], target: int, pitfall_ids: Iterable[str] = (),
              label: str | None = None) -> str | None:
    """One line naming a lint finding in ``cells[target]`` (0-based), the matched pitfall's
    own rule first; None when no rule fires on that cell."""
    found = [f for f in lint_cells(cells) if f.cell == target + 1]
    if not found:
        return None
    wanted = list(pitfall_ids)
    found.sort(key=lambda f: (f.rule not in wanted, f.line))
    f = found[0]
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    message = f.message if len(f.message) <= 140 else f.message[:137] + "..."
    where = label or f"cell {target + 1}"
    return f"devcheck lint, {where} line {f.line}: {f.rule}: {message}{more}; fix: {f.fix}"


def hint_for_exception(history: Sequence[str], tb: TracebackType | None,
                       pitfall_ids: Iterable[str] = ()) -> str | None:
    """The lint line for the cell that raised, given the kernel's input history (``In``,
    where ``In[n]`` is the cell run as ``[n]``)."""
    sources = _cell_sources(tb)
    if not sources:
        return None
    raising = sources[-1]  # the deepest cell: where the error really happened
    cells = [h if isinstance(h, str) else "" for h in history]
    norm = [c.rstrip() for c in cells]
    if raising.rstrip() in norm:
        target = len(norm) - 1 - norm[::-1].index(raising.rstrip())
        label = f"In [{target}]"
    else:
        cells.append(raising)
        target, label = len(cells) - 1, "the cell that raised"
    try:
        return cell_hint(cells, target, pitfall_ids, label)
    except RecursionError:  # a pathological cell must not break the error display
        return None
