"""Who did not arrive where: read the ranks' progress files and name the culprit.

Every rank runs the same sequence of steps and writes one line per step before doing it,
so the number of lines is a position: a rank with fewer lines is behind, and the ranks
ahead of it wait inside a collective it never reached. When every rank entered the same
collective and none left, the transport itself is stuck (NCCL's classic P2P hang).
``diagnose_hang`` is pure; ``rank_states`` only reads files.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcheck.dist.model import HangReport, RankState

NEXT_STEPS: dict[str, tuple[str, ...]] = {
    "launch": (
        "read the launcher's output below: torchrun failed before any rank started",
        "run the same torchrun line by hand (the command is in the JSON's launch.command)",
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


def _launch_steps(command: Sequence[str]) -> tuple[str, ...]:
    if not command:
        return NEXT_STEPS["launch"]
    return (NEXT_STEPS["launch"][0],
            "run the same torchrun line by hand: " + shlex.join(command))


def _last_error(output: str) -> str:
    """The launcher's own error line (``ValueError: The port number ...``), if any."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if re.match(r"^[\w.]*(Error|Exception)\b.*:", line):
            return line[:300]
    return ""


def _not_started(states: dict[int, _Tracker], world: int, opts: Any, timed_out: bool,
                 exit_code: int | None, command: Sequence[str], output: str) -> HangReport:
    missing = tuple(r for r in range(world) if r not in states)
    waited = timed_out or "RendezvousTimeoutError" in output  # ours, or c10d's join_timeout
    if not states and not waited:
        how = f"exited with code {exit_code}" if exit_code is not None else "ended"
        error = _last_error(output)
        return HangReport("launch", missing, f"no rank started: torchrun {how} before "
                          "launching any (not a timeout)" + (f": {error}" if error else
                                                             "; see its output below"),
                          None, _launch_steps(command))
    if opts.nnodes > 1 and not states:
        others = [n for n in range(opts.nnodes) if n != opts.node_rank]
        summary = (f"the rendezvous at {opts.endpoint} (id {opts.rdzv_id}) did not complete "
                   f"within {opts.timeout_s:g} s: it needs {opts.nnodes} nodes (--nnodes "
                   f"{opts.nnodes}) and only this node (node rank {opts.node_rank}) joined; "
                   f"missing: node rank {', '.join(map(str, others))} never arrived")
        return HangReport("rendezvous", missing, summary, None, NEXT_STEPS["rendezvous"])
    if not states:
        return HangReport("launch", missing, "no rank started: torchrun failed before its "
                          "workers ran", None, _launch_steps(command))
    local = [r for r in missing if opts.nnodes == 1]
    summary = (f"{_ranks(local)} never started (launched {opts.nproc} per node)" if local
               else f"{_ranks(list(missing))} run on other nodes; their progress is not "
               "visible from this node")
    return HangReport("launch", missing, summary, None, _launch_steps(command))


def diagnose_hang(states: dict[int, _Tracker], world: int, opts: Any, *,
                  timed_out: bool = True, exit_code: int | None = None,
                  command: Sequence[str] = (), launcher_output: str = "") -> HangReport:
    """Pure: the stage that broke, the ranks that did not arrive, and what to run next.

    ``timed_out``/``exit_code``/``launcher_output``: how the launcher ended; a rendezvous
    "timeout" is claimed only when something really ran out of time (our deadline or c10d's
    join_timeout). ``command``: the torchrun line, to rerun by hand."""
    errors = {r: t for r, t in states.items() if t.error}
    if errors:
        r, t = next(iter(errors.items()))
        stage = t.stage or "launch"
        where = f" at {t.step()}" if t.last.get("op") else ""
        summary = f"{_ranks(list(errors))} failed in the {stage} stage{where}: {t.error}"
        return HangReport(stage, tuple(errors), summary, t.step(), NEXT_STEPS.get(
            stage, NEXT_STEPS["gloo"]))
    if len(states) < world and (opts.nnodes == 1 or not states):
        return _not_started(states, world, opts, timed_out, exit_code, command,
                            launcher_output)
    live = {r: t for r, t in states.items() if not t.done}
    if not live:
        return HangReport("launch", (), "every rank finished, but the launcher reported a "
                          "failure: see its output", None, _launch_steps(command))
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
