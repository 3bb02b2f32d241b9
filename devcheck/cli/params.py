"""Click parameter types and checks shared by every command (devcheck's and softmax's).

Floats from the command line are checked once, here: ``nan`` passes every ``<``/``>``
comparison and ``inf`` overflows ``time.sleep`` and thread timeouts, so a bound check alone
is not enough. The error is click's one-line usage error (exit 2), naming the value seen
and the range expected.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import click


class FiniteFloat(click.ParamType):
    """A finite float within ``[low, high]`` (``low_open``/``high_open`` exclude the ends)."""

    name = "float"

    def __init__(self, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def _range(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open or self.low is None else '['}{lo}, " \
               f"{hi}{')' if self.high_open or self.high is None else ']'}"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float) and math.isfinite(value):
            x = value
        else:
            try:
                x = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number (expected a finite number in "
                          f"{self._range()})", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number (expected one in {self._range()})",
                      param, ctx)
        too_low = self.low is not None and (x <= self.low if self.low_open else x < self.low)
        too_high = self.high is not None and (x >= self.high if self.high_open else x > self.high)
        if too_low or too_high:
            self.fail(f"{x:g} is outside {self._range()}", param, ctx)
        return x

    def __repr__(self) -> str:
        return f"FiniteFloat{self._range()}"


def ensure_stdout(what: str, example: str) -> None:
    """Fail before any work when stdout is closed (``cmd >&-``): one line, not a traceback.

    Raises:
        click.ClickException: naming ``what`` could not be printed and how to rerun
            (``example``).
    """
    stdout = sys.stdout
    try:
        usable = stdout is not None and stdout.fileno() >= 0 and not stdout.closed
    except (OSError, ValueError, AttributeError):
        usable = stdout is not None and not getattr(stdout, "closed", True)  # CliRunner
    if not usable:
        raise click.ClickException(f"cannot print {what}: stdout is closed; rerun with stdout "
                                   f"open, e.g. `{example}`")
