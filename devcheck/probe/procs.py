"""The process-tree probe: which processes a job consists of, and what they cost the host.

``devcheck run`` and ``devcheck.watch()`` attribute GPU memory and CPU time to *the job*,
and a job is a tree: ``bash train.sh`` -> ``python train.py`` -> DataLoader workers. This
module is the one place that asks the OS about that tree. It is polled several times a
second beside the job, so the cheap path matters: on Linux the tree is walked through
``/proc/<pid>/task/<tid>/children`` (a few files, whatever the machine runs) instead of
psutil's scan of every process, and each process costs one read of ``/proc/<pid>/stat``;
elsewhere psutil answers (same fields, slower).

A probe never raises: a process that exits between two reads is simply gone from the next
reading (and its last reading stays in the previous one).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcheck.facts import printable


@dataclass(frozen=True)
class ProcReading:
    """One process of the tree at one instant.

    ``cpu_pct`` is the share of one core used since the previous reading (100 = one full
    core; a process with four busy threads reads 400); ``None`` on its first reading.
    """

    pid: int
    ppid: int | None
    name: str | None
    cpu_pct: float | None
    rss_bytes: int | None
    threads: int | None
    # share of the time its main thread was ready to run but waited for a CPU (run-queue
    # wait from /proc/<pid>/schedstat, Linux); 100 = it waited the whole time
    cpu_wait_pct: float | None = None


@dataclass(frozen=True)
class TreeReading:
    """The whole tree: ``procs`` root first; ``new`` lists (pid, ppid, cmdline) of processes
    seen for the first time, ``gone`` the pids that exited since the previous reading."""

    procs: tuple[ProcReading, ...]
    cpu_pct_total: float | None
    rss_bytes_total: int
    threads_total: int
    new: tuple[tuple[int, int | None, str], ...] = ()
    gone: tuple[int, ...] = ()
    cpu_wait_pct_total: float | None = None


def allowed_cores(pid: int = 0) -> int | None:
    """How many CPUs ``pid`` may run on (its affinity mask; taskset/cpuset/containers)."""
    try:
        return len(os.sched_getaffinity(pid))
    except (AttributeError, OSError):
        return os.cpu_count()


def proc_children(pid: int, all_threads: bool = True) -> list[int] | None:
    """Direct children through /proc (Linux >= 3.5 with CONFIG_PROC_CHILDREN); None when
    this kernel does not offer the file, so the caller falls back to psutil.

    Each thread has its own list (a child belongs to the thread that forked it); a torch
    process has a thread per core, so ``all_threads=False`` reads the main thread's only."""
    base = f"/proc/{pid}/task"
    if all_threads:
        try:
            tids = os.listdir(base)
        except FileNotFoundError:
            return []  # the process is gone
        except OSError:
            return None
    else:
        tids = [str(pid)]
    children: list[int] = []
    for tid in tids:
        try:
            with open(f"{base}/{tid}/children", "rb") as f:
                text = f.read()
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}"):
                return []  # the process is gone
            if not os.path.exists(f"{base}/{tid}"):
                continue  # the thread ended meanwhile
            return None  # the kernel has no children file
        except OSError:
            return None
        children.extend(int(c) for c in text.split())
    return children


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# CPU times come in clock ticks (10 ms): a shorter window than this would read 0% or 1000%
MIN_WINDOW_S = 0.05
FULL_SCAN_EVERY = 8  # read every thread's children once in this many samples (2 s at 4 Hz)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _stat(pid: int) -> tuple[str, int, float, int, int, int] | None:
    """/proc/<pid>/stat in one read: (name, ppid, cpu seconds, threads, rss bytes, start
    tick). The name is in parentheses and may itself hold spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    left, right = data.find(b"("), data.rfind(b")")
    fields = data[right + 2:].split()
    try:  # fields[0] is field 3 (state) of proc(5)
        return (data[left + 1:right].decode("utf-8", "replace"), int(fields[1]),
                (int(fields[11]) + int(fields[12])) / _CLK_TCK, int(fields[17]),
                int(fields[21]) * _PAGE, int(fields[19]))
    except (IndexError, ValueError):
        return None


def _sched_wait(pid: int) -> float | None:
    """Seconds the main thread of ``pid`` spent runnable but waiting for a CPU."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read(600).replace(b"\0", b" ").decode("utf-8", "replace").strip()[:300]
    except OSError:
        return ""


class ProcessTree:
    """Poll a root pid and all its descendants; keep per-process CPU-time baselines.

    ``include_root=False`` leaves the root out of the readings but still walks its
    descendants. On Linux each process costs one read of ``/proc/<pid>/stat`` per
    sample (psutil costs three or four); elsewhere psutil answers.
    """

    def __init__(self, root_pid: int, *, include_root: bool = True) -> None:
        self.root_pid = root_pid
        self.include_root = include_root
        self._linux = Path("/proc/self/stat").exists()
        self._psutil: Any = None
        if not self._linux:
            import psutil  # lazily: `import devcheck` stays light

            self._psutil = psutil
        self._procs: dict[int, Any] = {}  # pid -> psutil.Process (non-Linux)
        # pid -> (start tick or create time, cpu seconds, monotonic, last cpu %,
        #         run-queue wait seconds, last wait %)
        self._last: dict[int, tuple[float, float, float, float | None, float | None,
                                    float | None]] = {}
        self._cpus = os.cpu_count() or 1
        self._use_proc_children = self._linux and Path("/proc/self/task").is_dir()
        self._calls = 0
        self._scanned: dict[int, list[int]] = {}  # pid -> children, from the last full scan

    def pids(self) -> list[int]:
        """The root and its descendants, parents before children.

        Every ``FULL_SCAN_EVERY``-th call reads the children of every thread; the calls in
        between read the main threads' and keep the children found by the last full scan
        (a process started by a non-main thread is found within that many samples)."""
        if self._use_proc_children:
            full = self._calls % FULL_SCAN_EVERY == 0
            self._calls += 1
            order, todo, seen = [], [self.root_pid], set()
            found: dict[int, list[int]] = {}
            while todo:
                pid = todo.pop(0)
                if pid in seen:
                    continue
                seen.add(pid)
                kids = proc_children(pid, all_threads=full)
                if kids is None:
                    self._use_proc_children = False
                    return self.pids()
                if not full:
                    kids += [k for k in self._scanned.get(pid, ())
                             if k not in kids and os.path.exists(f"/proc/{k}")]
                found[pid] = kids
                if pid != self.root_pid or os.path.exists(f"/proc/{pid}"):
                    order.append(pid)
                todo.extend(kids)
            if full:
                self._scanned = found
            return order
        import psutil

        try:
            root = psutil.Process(self.root_pid)
            return [self.root_pid] + [p.pid for p in root.children(recursive=True)]
        except psutil.Error:
            return []

    def _read_psutil(self, pid: int) -> tuple[str, int, float, int, int, float] | None:
        psutil = self._psutil or __import__("psutil")
        self._psutil = psutil
        try:
            proc = self._procs.get(pid) or psutil.Process(pid)
            self._procs[pid] = proc
            with proc.oneshot():
                cpu = proc.cpu_times()
                return (proc.name(), proc.ppid(), float(cpu.user + cpu.system),
                        proc.num_threads(), int(proc.memory_info().rss), proc.create_time())
        except psutil.Error:
            self._procs.pop(pid, None)
            return None

    def _read(self, pid: int, now: float) -> tuple[ProcReading, str | None] | None:
        got = _stat(pid) if self._linux else self._read_psutil(pid)
        if got is None:
            return None
        name, ppid, used, threads, rss, born = got
        name = printable(name)  # any local user can name a process "\x1b]0;..."
        waited = _sched_wait(pid) if self._linux else None
        last = self._last.get(pid)
        fresh = last is None or last[0] != born  # a reused pid is another process
        pct = wait_pct = None
        if fresh or last is None:
            self._last[pid] = (born, used, now, None, waited, None)
        elif now - last[2] < MIN_WINDOW_S:
            pct, wait_pct = last[3], last[5]  # too short a window for 10 ms clock ticks
        else:
            pct = 100.0 * (used - last[1]) / (now - last[2])
            pct = round(min(max(0.0, pct), 100.0 * self._cpus), 1)
            if waited is not None and last[4] is not None:
                wait_pct = round(min(100.0, max(0.0, 100.0 * (waited - last[4])
                                                / (now - last[2]))), 1)
            self._last[pid] = (born, used, now, pct, waited, wait_pct)
        cmdline = None
        if fresh:
            cmdline = printable(_cmdline(pid)) if self._linux else name
        return ProcReading(pid=pid, ppid=ppid, name=name, cpu_pct=pct, rss_bytes=rss,
                           threads=threads, cpu_wait_pct=wait_pct), cmdline

    def sample(self) -> TreeReading:
        """Read every process of the tree now; never raises."""
        now = time.monotonic()
        readings: list[ProcReading] = []
        new: list[tuple[int, int | None, str]] = []
        for pid in self.pids():
            if pid == self.root_pid and not self.include_root:
                continue
            got = self._read(pid, now)
            if got is None:
                continue
            reading, cmdline = got
            readings.append(reading)
            if cmdline is not None:
                new.append((pid, reading.ppid, cmdline or reading.name or ""))
        alive = {r.pid for r in readings}
        gone = tuple(pid for pid in self._last if pid not in alive)
        for pid in gone:
            self._last.pop(pid, None)
            self._procs.pop(pid, None)
        known = [r.cpu_pct for r in readings if r.cpu_pct is not None]
        waits = [r.cpu_wait_pct for r in readings if r.cpu_wait_pct is not None]
        return TreeReading(
            procs=tuple(readings),
            cpu_pct_total=round(sum(known), 1) if known or not readings else None,
            rss_bytes_total=sum(r.rss_bytes or 0 for r in readings),
            threads_total=sum(r.threads or 0 for r in readings),
            new=tuple(new), gone=gone,
            cpu_wait_pct_total=round(sum(waits), 1) if waits else None)


class MachineCpu:
    """The whole machine's CPU use between two readings, 100 = one core busy.

    Compared with the job's own CPU it tells "the job waited for the CPU because other
    processes took it". Linux: one read of /proc/stat; elsewhere psutil.cpu_times()."""

    def __init__(self) -> None:
        self._last: tuple[float, float, int] | None = None

    @staticmethod
    def _read() -> tuple[float, float, int] | None:
        """(busy seconds, total seconds, CPUs) summed over every CPU."""
        try:
            with open("/proc/stat", "rb") as f:
                lines = f.read().split(b"\n")
            values = [int(x) for x in lines[0].split()[1:]]
            cpus = sum(1 for ln in lines if ln[:3] == b"cpu" and ln[3:4].isdigit())
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            total = sum(values[:8])  # guest time is already inside user
            return (total - idle) / _CLK_TCK, total / _CLK_TCK, cpus
        except (OSError, ValueError, IndexError):
            pass
        try:
            import psutil

            t = psutil.cpu_times()
            idle = t.idle + getattr(t, "iowait", 0.0)
            total = sum(t)
            return total - idle, total, psutil.cpu_count() or 1
        except Exception:
            return None

    def sample(self) -> float | None:
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[1] <= last[1]:
            return None
        share = (now[0] - last[0]) / (now[1] - last[1])
        return round(100.0 * max(0.0, min(1.0, share)) * now[2], 1)
