"""devcheck: is PyTorch really using my GPU, and if not, why not?

The public surface is kept small and lazy: importing ``devcheck`` imports neither torch
nor pynvml (``devcheck gpus`` and ``devcheck explain`` must answer before torch could
even load).
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext devcheck``: explain device errors under the traceback."""
    from devcheck.integrations.ipython import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    from devcheck.integrations.ipython import unload_ipython_extension as _unload

    _unload(ipython)
