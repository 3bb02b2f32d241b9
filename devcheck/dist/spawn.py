"""Run a function on a few gloo ranks in child processes, with a hard timeout.

For the distributed pitfalls' reproductions (they must really run 2 ranks, in seconds,
inside the lab's child) and for tests. Not a launcher for users: ``devcheck dist`` and the
trainer go through torchrun. Ranks start with ``fork`` where it exists (torch is already
imported in the lab, so a rank starts in milliseconds), ``spawn`` elsewhere; they meet at
a ``tcp://127.0.0.1:PORT`` store, exactly as ``init_process_group`` does under torchrun.
Whatever a rank raises comes back as ``RankOutcome.error`` with its own type and words.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RankOutcome:
    rank: int
    ok: bool
    value: Any = None
    error_type: str | None = None
    error: str | None = None  # the exception's message, whole
    timed_out: bool = False

    @property
    def error_text(self) -> str:
        return f"{self.error_type}: {self.error}" if self.error_type else (self.error or "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(fn: Callable[..., Any], rank: int, world: int, port: int, timeout_s: float,
               out: str, args: tuple[Any, ...], init: bool) -> None:
    import torch.distributed as dist

    result: dict[str, Any]
    try:
        if init:
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                    world_size=world, timeout=timedelta(seconds=timeout_s))
        result = {"ok": True, "value": fn(rank, world, *args)}
    except BaseException as exc:  # the rank's own error, whatever it is, goes to the parent
        result = {"ok": False, "error_type": type(exc).__qualname__, "error": str(exc),
                  "traceback": "".join(traceback.format_exception(exc))[-4000:]}
    finally:
        with contextlib.suppress(Exception):
            if dist.is_initialized():
                dist.destroy_process_group()
    Path(out).write_text(json.dumps(result, default=str), encoding="utf-8")


def run_ranks(fn: Callable[..., Any], world: int = 2, *, timeout_s: float = 20.0,
              start: Sequence[int] | None = None, args: tuple[Any, ...] = (),
              store_timeout_s: float | None = None, init: bool = True,
              method: str | None = None) -> list[RankOutcome]:
    """Run ``fn(rank, world, *args)`` on ranks ``start`` (default all) of a gloo group.

    ``store_timeout_s`` is init_process_group's timeout (rendezvous and collectives);
    ``timeout_s`` is the hard limit after which surviving ranks are killed. ``fn`` must be
    importable by name (a module-level function) for the spawn start method; ranks that use
    CUDA must not pass ``method="fork"`` (CUDA does not survive a fork).
    """
    # spawn by default: a fork of a process whose OpenMP/intra-op pool already ran (any
    # caller that computed with torch, a test session) can deadlock in the child's first
    # matmul. fork only when the caller asks for it.
    ctx: Any = multiprocessing.get_context(method or "spawn")
    ranks = list(range(world)) if start is None else list(start)
    port = free_port()
    st = timeout_s if store_timeout_s is None else store_timeout_s
    with tempfile.TemporaryDirectory(prefix="devcheck-ranks-") as tmp:
        outs = {r: os.path.join(tmp, f"rank{r}.json") for r in ranks}
        procs = {r: ctx.Process(target=_rank_main, args=(fn, r, world, port, st, outs[r],
                                                        args, init), daemon=True)
                 for r in ranks}
        for p in procs.values():
            p.start()
        deadline = time.monotonic() + timeout_s
        for p in procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
        results = []
        for r, p in procs.items():
            if p.is_alive():
                p.kill()
                p.join(5)
                results.append(RankOutcome(r, False, timed_out=True,
                                           error=f"rank {r} still running after {timeout_s:g} s"))
                continue
            try:
                data = json.loads(Path(outs[r]).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                results.append(RankOutcome(r, False, error=f"rank {r} died (exit code "
                                                           f"{p.exitcode}) without a result"))
                continue
            results.append(RankOutcome(r, data["ok"], data.get("value"),
                                       data.get("error_type"), data.get("error")))
        return results


def first_error(outcomes: list[RankOutcome]) -> RankOutcome | None:
    """The first rank that raised (not one killed on timeout), else the first timed out."""
    raised = [o for o in outcomes if not o.ok and not o.timed_out]
    failed = raised or [o for o in outcomes if not o.ok]
    return failed[0] if failed else None
