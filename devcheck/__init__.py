"""devcheck: is PyTorch really using my GPU, and if not, why not?

The public API, all of it lazy: ``import devcheck`` imports neither torch nor the NVML bindings
(``devcheck gpus`` and ``devcheck explain`` must answer before torch could even load).

- :func:`doctor` -> :class:`devcheck.facts.DoctorResult` (facts, findings, availability);
- :func:`explain` -> the pitfalls matching an error text, best first;
- :class:`StepGuard` (imported on first use: it imports torch);
- ``%load_ext devcheck`` in IPython/Jupyter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from devcheck.facts import DoctorResult
    from devcheck.guard import StepGuard
    from devcheck.pitfalls.explain import Match

__all__ = ["StepGuard", "__version__", "doctor", "explain", "load_ipython_extension",
           "unload_ipython_extension"]


def doctor(*, live: bool = True, timeout_s: float = 30.0,
           require: Sequence[str] = ()) -> DoctorResult:
    """Can torch use the GPU here, and if not, why not; a broken machine never raises.

    Returns the facts (host, NVML, the torch wheel, torch itself, probed in a child process
    so a broken torch cannot take the caller down), the findings worst first (each with
    evidence and a fix), and the availability summary (``.availability.usable``,
    ``.availability.cuda_reason``). ``require`` adds a verdict per kind ("cuda", "mps"), as
    ``devcheck doctor --require`` does; ``result.ok`` is False when any finding is an error.

    Raises:
        ValueError: ``require`` names a kind other than "cuda" or "mps" (a caller's typo;
            the probes themselves never raise).
    """
    from devcheck.checkup import run
    from devcheck.rules.require import REQUIRE_KINDS

    kinds = (require,) if isinstance(require, str) else tuple(require)
    unknown = [k for k in kinds if k not in REQUIRE_KINDS]
    if unknown:
        raise ValueError(f"devcheck.doctor(require=...): {unknown[0]!r} is not a device kind; "
                         f"expected one of {', '.join(REQUIRE_KINDS)}")
    return run(live=live, timeout_s=timeout_s, require_kinds=kinds, isolate=True)


def explain(text: str, *, limit: int = 5) -> list[Match]:
    """The known pitfalls matching an error message or a whole traceback, best first.

    Reads only the text (nothing is run or evaluated) and imports no torch; an empty list
    means no known pitfall matched.
    """
    from devcheck.pitfalls.explain import explain_text

    return explain_text(text, limit=limit)


# Lazy attributes: name -> (module, attribute). Imported on first access only.
_LAZY: dict[str, tuple[str, str]] = {
    "StepGuard": ("devcheck.guard", "StepGuard"),  # imports torch
    # devcheck.watch(): sample this process's tree and the GPUs in a thread (psutil, pynvml
    # imported on first use only)
    "watch": ("devcheck.run.watcher", "watch"),
    "Watch": ("devcheck.run.watcher", "Watch"),
}


def __getattr__(name: str) -> Any:
    spec = _LAZY.get(name)
    if spec is None:
        raise AttributeError(f"module 'devcheck' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(spec[0]), spec[1])
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext devcheck``: explain device errors under the traceback."""
    from devcheck.integrations.ipython import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    from devcheck.integrations.ipython import unload_ipython_extension as _unload

    _unload(ipython)
