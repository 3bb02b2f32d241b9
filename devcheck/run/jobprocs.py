"""Which live processes belong to a job, for ``devcheck run``'s cleanup and its keeper.

A job is more than its process group: its session, the processes that carry the run's
``DEVCHECK_RUN_ID`` in their environment (grandchildren that left the session), the pids
devcheck saw in its tree (matched by start time, so a recycled pid is not taken for the
job's), and the descendants of all of them. :func:`select` is the pure rule; the rest reads
``/proc`` (Linux).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from devcheck.run.runner import TAG_VAR


@dataclass(frozen=True)
class Proc:
    """One process as /proc/<pid>/stat shows it."""

    ppid: int
    sid: int
    start: int  # clock ticks after boot: with the pid, an identity no recycling repeats
    zombie: bool = False


def select(procs: Mapping[int, Proc], *, job_pid: int, job_start: int | None,
           known: Mapping[int, int], marked: Callable[[int], bool],
           spare: Iterable[int] = ()) -> set[int]:
    """The live processes that belong to the job: its session, ``marked`` ones (the run's
    id in their environment), ``known`` pids whose start time still matches, the sessions
    those lead, and every descendant of all of them. Never pid 1 nor ``spare``."""
    job = procs.get(job_pid)
    session_ours = job is None or job_start is None or job.start == job_start
    live = {pid: p for pid, p in procs.items() if not p.zombie}
    seeds = {pid for pid, p in live.items()
             if (session_ours and p.sid == job_pid) or known.get(pid) == p.start
             or marked(pid)}
    leaders = {pid for pid in seeds if live[pid].sid == pid}
    chosen = seeds | {pid for pid, p in live.items() if p.sid in leaders}
    children: dict[int, list[int]] = {}
    for pid, p in live.items():
        children.setdefault(p.ppid, []).append(pid)
    todo = list(chosen)
    while todo:
        for kid in children.get(todo.pop(), ()):
            if kid not in chosen:
                chosen.add(kid)
                todo.append(kid)
    return chosen - {0, 1} - set(spare)


# --- /proc ---------------------------------------------------------------------------

def read_stat(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    try:  # fields[0] is proc(5)'s field 3 (state)
        return Proc(ppid=int(fields[1]), sid=int(fields[3]), start=int(fields[19]),
                    zombie=fields[0] in (b"Z", b"X"))
    except (IndexError, ValueError):
        return None


def scan() -> dict[int, Proc]:
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            p = read_stat(int(entry))
            if p is not None:
                procs[int(entry)] = p
    return procs


def has_tag(pid: int, needle: bytes) -> bool:
    """Does ``pid``'s environment hold ``needle`` (``NAME=value``)? False when unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


class Tagged:
    """The live processes whose environment holds ``DEVCHECK_RUN_ID=token``; each one's
    environment is read once (a process is known by its pid and start time)."""

    def __init__(self, token: str) -> None:
        self.needle = f"{TAG_VAR}={token}".encode()
        self._seen: dict[tuple[int, int], bool] = {}

    def has(self, pid: int, p: Proc) -> bool:
        key = (pid, p.start)
        if key not in self._seen:
            self._seen[key] = has_tag(pid, self.needle)
        return self._seen[key]

    def __call__(self) -> set[int]:
        return {pid for pid, p in scan().items() if not p.zombie and self.has(pid, p)}
