"""Who did not arrive where: read the ranks' progress files and name the culprit.

Every rank runs the same sequence of steps and writes one line per step before doing it,
so the number of lines is a position: a rank with fewer lines is behind, and the ranks
ahead of it wait inside a collective it never reached. When every rank entered the same
collective and none left, the transport itself is stuck (NCCL's classic P2P hang).
``diagnose_hang`` is pure; ``rank_states`` only reads files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcheck.dist.model import HangReport, RankState

NEXT_STEPS: dict[str, tuple[str, ...]] = {
    "launch": (
        "read the launcher's output below: torchrun failed before any rank started",
        "run the same torchrun line by hand: python -m torch.distributed.run --standalone "
        "--nproc-per-node 2 -m devcheck.dist.worker --out /tmp/x",
    ),
    "rendezvous": (
        "start the same command on every node (same --nnodes, --rdzv-endpoint, --rdzv-id)",
        "check every node reaches the endpoint: nc -zv HOST PORT (firewall, wrong address)",
        "pick the right network interface: GLOO_SOCKET_IFNAME=eth0 NCCL_SOCKET_IFNAME=eth0",
    ),
    "gloo": (
        "rerun with TORCH_DISTRIBUTED_DEBUG=DETAIL to see each rank's collective calls",
        "pick the interface the nodes share: GLOO_SOCKET_IFNAME=eth0",
    ),
    "nccl": (
        "rerun with NCCL_DEBUG=INFO: it shows the transport chosen (P2P, SHM, NET) and "
        "where initialisation stops",
        "turn on torch's flight recorder: TORCH_NCCL_TRACE_BUFFER_SIZE=2000 "
        "TORCH_NCCL_DUMP_ON_TIMEOUT=1 (dumps every rank's last collectives on timeout)",
        "TORCH_DISTRIBUTED_DEBUG=DETAIL checks that ranks call the same collectives",
        "as a test only, NCCL_P2P_DISABLE=1: if that cures it, the cause is ACS/IOMMU "
        "on the PCIe switch (disable ACS or boot with iommu=pt), not NCCL",
    ),
}


@dataclass
class _Tracker:
    rank: int
    events: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    stages_passed: set[str] = field(default_factory=set)
    error: str | None = None
    done: bool = False
    host: str | None = None
    pid: int | None = None

    def step(self) -> str | None:
        ev = self.last.get("event")
        if ev in ("enter", "exit"):
            return f"{ev} {self.last.get('op')} #{self.last.get('seq')}"
        return ev

    def public(self) -> RankState:
        op = self.last.get("op")
        return RankState(rank=self.rank, started=self.events > 0, last_event=self.step(),
                         last_op=op, last_seq=self.last.get("seq") if op else None,
                         stage=self.stage, finished=self.done, error=self.error,
                         host=self.host, pid=self.pid)


def _track(rank: int, lines: list[str]) -> _Tracker:
    tr = _Tracker(rank)
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:  # a line cut by a kill: the ones before it stand
            continue
        tr.events += 1
        tr.stage = ev.get("stage", tr.stage)
        kind = ev.get("event")
        if kind == "start":
            tr.host, tr.pid = ev.get("host"), ev.get("pid")
        elif kind == "passed":
            tr.stages_passed.add(str(ev.get("stage")))
        elif kind == "error":
            tr.error = ev.get("error")
        elif kind == "done":
            tr.done = True
        if kind in ("enter", "exit"):
            tr.last = ev
        elif kind in ("start", "stage"):
            tr.last = ev
    return tr


def rank_states(out_dir: Path, world: int) -> dict[int, _Tracker]:
    """Every rank whose progress file exists here (remote nodes' ranks are not visible)."""
    out: dict[int, _Tracker] = {}
    for path in out_dir.glob("rank*.progress.jsonl"):
        try:
            rank = int(path.name[4:].split(".")[0])
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except (ValueError, OSError):
            continue
        out[rank] = _track(rank, lines)
    return dict(sorted(out.items()))


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _not_started(states: dict[int, _Tracker], world: int, opts: Any) -> HangReport:
    missing = tuple(r for r in range(world) if r not in states)
    if opts.nnodes > 1 and not states:
        others = [n for n in range(opts.nnodes) if n != opts.node_rank]
        summary = (f"the rendezvous at {opts.endpoint} (id {opts.rdzv_id}) did not complete "
                   f"within {opts.timeout_s:g} s: it needs {opts.nnodes} nodes (--nnodes "
                   f"{opts.nnodes}) and only this node (node rank {opts.node_rank}) joined; "
                   f"missing: node rank {', '.join(map(str, others))} never arrived")
        return HangReport("rendezvous", missing, summary, None, NEXT_STEPS["rendezvous"])
    if not states:
        return HangReport("launch", missing, "no rank started: torchrun failed before its "
                          "workers ran", None, NEXT_STEPS["launch"])
    local = [r for r in missing if opts.nnodes == 1]
    summary = (f"{_ranks(local)} never started (launched {opts.nproc} per node)" if local
               else f"{_ranks(list(missing))} run on other nodes; their progress is not "
               "visible from this node")
    return HangReport("launch", missing, summary, None, NEXT_STEPS["launch"])


def diagnose_hang(states: dict[int, _Tracker], world: int, opts: Any) -> HangReport:
    """Pure: the stage that broke, the ranks that did not arrive, and what to run next."""
    errors = {r: t for r, t in states.items() if t.error}
    if errors:
        r, t = next(iter(errors.items()))
        stage = t.stage or "launch"
        where = f" at {t.step()}" if t.last.get("op") else ""
        summary = f"{_ranks(list(errors))} failed in the {stage} stage{where}: {t.error}"
        return HangReport(stage, tuple(errors), summary, t.step(), NEXT_STEPS.get(
            stage, NEXT_STEPS["gloo"]))
    if len(states) < world and (opts.nnodes == 1 or not states):
        return _not_started(states, world, opts)
    live = {r: t for r, t in states.items() if not t.done}
    if not live:
        return HangReport("launch", (), "every rank finished, but the launcher reported a "
                          "failure: see its output", None, NEXT_STEPS["launch"])
    ahead = max(t.events for t in live.values())
    behind = sorted(r for r, t in live.items() if t.events < ahead)
    lead = next(t for t in live.values() if t.events == ahead)
    stage = lead.stage or "rendezvous"
    waiting = lead.step() or "start"
    if lead.last.get("op") == "init_process_group":
        stage = "rendezvous"
    if behind:
        lag = states[behind[0]]
        target = waiting.removeprefix("enter ")
        waiters = sorted(set(live) - set(behind))
        summary = (f"{_ranks(behind)} never reached {target} (stage {stage}); "
                   f"{_ranks(waiters)} wait{'s' if len(waiters) == 1 else ''} inside it. "
                   f"Last step of rank {behind[0]}: {lag.step() or 'start'}")
        return HangReport(stage, tuple(behind), summary, target, NEXT_STEPS[stage])
    if lead.last.get("event") == "enter":
        target = waiting.removeprefix("enter ")
        summary = (f"every rank entered {target} (stage {stage}) and none left: the "
                   f"{'rendezvous' if stage == 'rendezvous' else stage + ' transport'} "
                   "is stuck, not one rank")
        return HangReport(stage, (), summary, target, NEXT_STEPS[stage])
    summary = f"every rank stopped after {waiting} (stage {stage}) without an error"
    return HangReport(stage, (), summary, waiting, NEXT_STEPS[stage])
