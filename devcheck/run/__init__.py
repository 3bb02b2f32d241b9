"""Watching a job: ``devcheck run`` (a child process) and ``devcheck.watch()`` (in-process).

runner (child, signals, stderr tee) -> sampler (probe/nvml_sample + probe/procs, a thread)
-> timeline (one Sample per tick) -> stats (streaming) -> verdicts (pure) -> report / plot.
Nothing here is imported by ``import devcheck``; :func:`watch` is exposed lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["watch", "Watch"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from devcheck.run import watcher as _watcher

        return getattr(_watcher, name)
    raise AttributeError(f"module 'devcheck.run' has no attribute {name!r}")
