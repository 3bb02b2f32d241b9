"""The program each rank runs under ``torch.distributed.run`` (launched by devcheck.dist.launch).

Stages in order, so a failure says which layer broke: ``rendezvous`` (init_process_group
over torchrun's store), ``gloo`` (CPU collectives), then ``nccl`` (GPU collectives on
``cuda:LOCAL_RANK``). In each: all_reduce / all_gather / broadcast with rank-dependent
values (a wrong reduction of ones can still sum right) counted element by element, a size
sweep timed nccl-tests' way (the slowest rank's mean), and barrier latency.

Every step is written first to this rank's progress file (one JSON line, flushed), so when a
rank hangs the parent can read who reached what: "rank 1 never reached all_reduce #3".
Results go to ``rank{R}.result.json``; nothing is printed on success.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcheck.dist.bandwidth import OPS, algbw_gbps, bus_factor
from devcheck.fileio import atomic_write_text

if TYPE_CHECKING:
    import torch

CHECK_ELEMENTS = 65_537  # odd, so chunked algorithms meet a ragged last piece


def _stall() -> tuple[int, str, int] | None:
    """DEVCHECK_DIST_STALL=RANK:OP:SEQ makes that rank hang before that collective, to see
    (and test) the hang diagnosis for real; unset, it does nothing."""
    spec = os.environ.get("DEVCHECK_DIST_STALL", "")
    parts = spec.split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[0]), parts[1], int(parts[2])


_STALL = _stall()


class Progress:
    """One JSON line per step, flushed at once: the parent reads it while we may hang."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.seq: dict[str, int] = {}
        self.stage = "launch"

    def event(self, event: str, **extra: Any) -> None:
        line = {"t": round(time.time(), 6), "event": event, "stage": self.stage, **extra}
        self._f.write(json.dumps(line) + "\n")
        self._f.flush()

    def enter(self, op: str, note: str = "") -> int:
        n = self.seq[op] = self.seq.get(op, 0) + 1
        if _STALL == (int(os.environ.get("RANK", "0")), op, n):
            time.sleep(3600)  # fault injection: this rank "never reaches" op #n
        self.event("enter", op=op, seq=n, note=note)
        return n

    def exit(self, op: str, n: int) -> None:
        self.event("exit", op=op, seq=n)


def _pattern(n: int, mod: int, device: torch.device) -> torch.Tensor:
    import torch

    return (torch.arange(n, dtype=torch.float32, device=device) % mod)


def _checks(p: Progress, group: Any, device: torch.device, backend: str) -> list[dict[str, Any]]:
    """all_reduce / all_gather / broadcast with exact, rank-dependent expected values."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    n, out = CHECK_ELEMENTS, []
    base = _pattern(n, 251, device)
    x = base * (rank + 1) + rank
    s = p.enter("all_reduce", "check")
    dist.all_reduce(x, group=group)
    p.exit("all_reduce", s)
    want = base * (world * (world + 1) // 2) + world * (world - 1) // 2
    out.append(("all_reduce", int((x != want).sum().item()), n))

    mine = _pattern(n, 997, device) + 1000 * rank
    parts = [torch.full_like(mine, -1.0) for _ in range(world)]
    s = p.enter("all_gather", "check")
    dist.all_gather(parts, mine, group=group)
    p.exit("all_gather", s)
    wrong = sum(int((t != _pattern(n, 997, device) + 1000 * r).sum().item())
                for r, t in enumerate(parts))
    out.append(("all_gather", wrong, n * world))

    src = world - 1  # not rank 0: a root mix-up shows
    want_b = _pattern(n, 991, device) + 3 * src
    y = want_b.clone() if rank == src else torch.full_like(want_b, -1.0)
    s = p.enter("broadcast", "check")
    dist.broadcast(y, src=src, group=group)
    p.exit("broadcast", s)
    out.append(("broadcast", int((y != want_b).sum().item()), n))
    return [{"backend": backend, "op": op, "elements": el, "wrong": w} for op, w, el in out]


def _iters(size: int) -> int:
    return max(5, min(50, (64 * 1024**2) // max(size, 1)))


def _run_op(op: str, group: Any, x: torch.Tensor, parts: list[torch.Tensor]) -> None:
    import torch.distributed as dist

    if op == "all_reduce":
        dist.all_reduce(x, group=group)
    elif op == "all_gather":
        dist.all_gather(parts, x, group=group)
    else:
        dist.broadcast(x, src=0, group=group)


def _sweep(p: Progress, group: Any, device: torch.device, backend: str, sizes: list[int],
           sync: Any, ops: tuple[str, ...] = OPS) -> list[dict[str, Any]]:
    """Time each op at each size: warm up, then ``iters`` calls; the slowest rank's mean."""
    import torch
    import torch.distributed as dist

    world, out = dist.get_world_size(), []
    for size in sizes:
        for op in ops:
            n = size // 4 // world if op == "all_gather" else size // 4
            n = max(n, 1)
            x = torch.ones(n, device=device)
            parts = [torch.empty_like(x) for _ in range(world)] if op == "all_gather" else []
            s = p.enter(op, f"sweep {size} bytes")
            for _ in range(2):
                _run_op(op, group, x, parts)
            sync()
            iters = _iters(size)
            dist.barrier(group=group)
            t0 = time.perf_counter()
            for _ in range(iters):
                _run_op(op, group, x, parts)
            sync()
            elapsed = torch.tensor([(time.perf_counter() - t0) / iters], dtype=torch.float64)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # on the default (gloo) group
            p.exit(op, s)
            t = float(elapsed.item())
            real = n * 4 * (world if op == "all_gather" else 1)
            alg = algbw_gbps(real, t)
            out.append({"backend": backend, "op": op, "size_bytes": real,
                        "time_us": round(t * 1e6, 3), "algbw_gbps": round(alg, 6),
                        "busbw_gbps": round(alg * bus_factor(op, world), 6)})
    return out


def _barrier_latency(p: Progress, group: Any, sync: Any, repeat: int = 20) -> float:
    import torch
    import torch.distributed as dist

    s = p.enter("barrier", "latency")
    dist.barrier(group=group)
    t0 = time.perf_counter()
    for _ in range(repeat):
        dist.barrier(group=group)
    sync()
    mean = torch.tensor([(time.perf_counter() - t0) / repeat], dtype=torch.float64)
    dist.all_reduce(mean, op=dist.ReduceOp.MAX)
    p.exit("barrier", s)
    return round(float(mean.item()) * 1e6, 3)


def _stage(p: Progress, result: dict[str, Any], backend: str, group: Any,
           device: torch.device, sizes: list[int], sync: Any) -> None:
    p.stage = backend
    p.event("stage")
    checks = _checks(p, group, device, backend)
    import torch
    import torch.distributed as dist

    wrong = torch.tensor([c["wrong"] for c in checks], dtype=torch.int64)
    dist.all_reduce(wrong)  # totals over ranks, on the default (gloo) group
    for c, w in zip(checks, wrong.tolist(), strict=True):
        c["wrong"] = int(w)
    result["checks"] += checks
    result["bandwidth"] += _sweep(p, group, device, backend, sizes, sync)
    result["barrier_latency_us"][backend] = _barrier_latency(p, group, sync)
    p.event("passed")


def run(out_dir: Path, backends: list[str], sizes: list[int], timeout_s: float) -> int:
    """One rank's whole job; returns its exit code (the launcher reports failures)."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    p = Progress(out_dir / f"rank{rank}.progress.jsonl")
    p.event("start", pid=os.getpid(), host=socket.gethostname(), local_rank=local_rank,
            world_size=int(os.environ.get("WORLD_SIZE", "1")))
    result: dict[str, Any] = {"rank": rank, "local_rank": local_rank, "checks": [],
                              "bandwidth": [], "barrier_latency_us": {},
                              "host": socket.gethostname()}
    import torch
    import torch.distributed as dist

    try:
        p.stage = "rendezvous"
        s = p.enter("init_process_group")
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
        p.exit("init_process_group", s)
        result["world_size"] = dist.get_world_size()
        p.event("passed")
        _stage(p, result, "gloo", None, torch.device("cpu"), sizes, lambda: None)
        if "nccl" in backends:
            p.stage = "nccl"
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
            v = torch.cuda.nccl.version()  # (2, 27, 3); an int like 2708 in old torch
            result["nccl_version"] = ".".join(map(str, v)) if isinstance(v, tuple) else \
                f"{v // 1000}.{v % 1000 // 100}.{v % 100}"
            result["device_name"] = torch.cuda.get_device_name(dev)
            group = dist.new_group(backend="nccl")
            _stage(p, result, "nccl", group, dev, sizes, lambda: torch.cuda.synchronize(dev))
        p.event("done")
        return 0
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:500]
        p.event("error", error=f"{type(exc).__name__}: {first}")
        return 1
    finally:
        atomic_write_text(out_dir / f"rank{rank}.result.json", json.dumps(result),
                          what="the rank's result")
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devcheck.dist.worker")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--backends", default="gloo")
    ap.add_argument("--sizes", default="4096")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    return run(a.out, a.backends.split(","), [int(s) for s in a.sizes.split(",")], a.timeout)


if __name__ == "__main__":
    sys.exit(main())
