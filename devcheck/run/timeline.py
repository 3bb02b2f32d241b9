"""The timeline: one :class:`Sample` per tick, as written to ``timeline.jsonl``.

Each line of ``timeline.jsonl`` is one JSON object with ``"v"`` (the schema version) and
``"kind"``: one ``start`` line (the command, the GPUs, the CUDA_VISIBLE_DEVICES mapping),
then one ``sample`` line per tick, then one ``end`` line (exit code, duration). Field
names carry their units and ``null`` means "not available", never zero; docs/run.md
documents every field and what it does *not* mean. Add fields, never rename them.

This module is pure: :func:`build_sample` joins the two probes' readings (NVML and the
process tree) and marks which GPU processes belong to the job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from devcheck.facts import ToDict
from devcheck.probe.nvml_sample import GpuReading, GpuStatic, NvmlEvent
from devcheck.probe.procs import ProcReading, TreeReading

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class GpuProc(ToDict):
    """A process with a CUDA context on a GPU; ``in_job`` when it is part of the job's
    process tree (else it is another user's or another job's)."""

    pid: int
    in_job: bool
    used_memory_bytes: int | None
    sm_util_pct: int | None = None
    mem_util_pct: int | None = None
    unknown_pid: bool = False  # no such pid here: NVML sees another PID namespace (container)


@dataclass(frozen=True)
class GpuSample(ToDict):
    index: int  # NVML index
    torch_index: int | None  # cuda:N as the job sees it; None = hidden from the job
    util_gpu_pct: int | None = None  # share of the window any kernel ran: not SM occupancy
    util_memory_pct: int | None = None  # share of the window memory was read/written
    memory_used_bytes: int | None = None  # every process + contexts + allocator caches
    memory_total_bytes: int | None = None
    power_w: float | None = None
    temperature_c: int | None = None
    sm_clock_mhz: int | None = None
    throttle: tuple[str, ...] | None = None
    lost: bool = False
    job_memory_bytes: int | None = None  # sum over the job's processes on this GPU
    processes: tuple[GpuProc, ...] | None = None  # None: NVML could not list them


@dataclass(frozen=True)
class Event(ToDict):
    t_s: float
    kind: str  # nvml_unavailable, gpu_lost, field_unsupported, field_error,
    #            process_started, process_exited, signal_forwarded
    message: str
    gpu: int | None = None
    pid: int | None = None


@dataclass(frozen=True)
class Sample(ToDict):
    t_s: float  # seconds since the job started
    time_unix: float
    gpus: tuple[GpuSample, ...]
    procs: tuple[ProcReading, ...]  # the job's tree, root first
    cpu_pct_total: float | None  # 100 = one full core
    rss_bytes_total: int
    threads_total: int
    events: tuple[Event, ...] = ()
    machine_cpu_pct: float | None = None  # every process on the machine, 100 = one core
    cpu_wait_pct_total: float | None = None  # the tree's main threads waiting for a CPU

    def to_json(self) -> str:
        return json.dumps({"v": SCHEMA_VERSION, "kind": "sample", **self.to_dict()},
                          separators=(",", ":"))


def header(*, command: list[str], pid: int | None, interval_s: float,
           allowed_cores: int | None, gpus: tuple[GpuStatic, ...],
           torch_index: dict[int, int], visible_setting: str | None,
           visible_note: str | None, nvml_error: str | None, started_unix: float) -> str:
    """The ``start`` line."""
    doc: dict[str, Any] = {
        "v": SCHEMA_VERSION, "kind": "start", "command": command, "pid": pid,
        "interval_s": interval_s, "allowed_cores": allowed_cores,
        "started_unix": started_unix, "nvml_error": nvml_error,
        "cuda_visible_devices": visible_setting, "cuda_visible_note": visible_note,
        "gpus": [{**ToDict.to_dict(g), "torch_index": torch_index.get(g.index)}  # type: ignore[arg-type]
                 for g in gpus],
    }
    return json.dumps(doc, separators=(",", ":"))


def footer(*, exit_code: int | None, duration_s: float, samples: int) -> str:
    return json.dumps({"v": SCHEMA_VERSION, "kind": "end", "exit_code": exit_code,
                       "duration_s": round(duration_s, 3), "samples": samples},
                      separators=(",", ":"))


def _gpu_sample(r: GpuReading, torch_index: int | None, job: set[int],
                unknown: frozenset[int]) -> GpuSample:
    procs = None
    job_mem = None
    if r.processes is not None:
        procs = tuple(GpuProc(pid=p.pid, in_job=p.pid in job,
                              used_memory_bytes=p.used_memory_bytes,
                              sm_util_pct=p.sm_util_pct, mem_util_pct=p.mem_util_pct,
                              unknown_pid=p.pid in unknown)
                      for p in r.processes)
        mine = [p for p in procs if p.in_job]
        if mine:
            job_mem = sum(p.used_memory_bytes or 0 for p in mine)
    return GpuSample(
        index=r.index, torch_index=torch_index, util_gpu_pct=r.util_gpu_pct,
        util_memory_pct=r.util_memory_pct, memory_used_bytes=r.memory_used_bytes,
        memory_total_bytes=r.memory_total_bytes, power_w=r.power_w,
        temperature_c=r.temperature_c, sm_clock_mhz=r.sm_clock_mhz, throttle=r.throttle,
        lost=r.lost, job_memory_bytes=job_mem, processes=procs)


def build_sample(*, t_s: float, time_unix: float, gpus: tuple[GpuReading, ...],
                 tree: TreeReading, torch_index: dict[int, int],
                 nvml_events: list[NvmlEvent], extra_pids: frozenset[int] = frozenset(),
                 extra_events: tuple[Event, ...] = (),
                 machine_cpu_pct: float | None = None,
                 unknown_pids: frozenset[int] = frozenset()) -> Sample:
    """Join one tick's readings; a GPU process is the job's when its pid is in the tree
    (or in ``extra_pids``: processes of the job that left the tree, e.g. daemonised).
    ``unknown_pids``: pids NVML listed that do not exist in this PID namespace."""
    job = {p.pid for p in tree.procs} | set(extra_pids)
    events = [Event(t_s, e.kind, e.message, gpu=e.gpu) for e in nvml_events]
    events += [Event(t_s, "process_started", f"pid {pid} (parent {ppid}): {cmd}", pid=pid)
               for pid, ppid, cmd in tree.new]
    events += [Event(t_s, "process_exited", f"pid {pid} exited", pid=pid) for pid in tree.gone]
    return Sample(
        t_s=round(t_s, 3), time_unix=round(time_unix, 3),
        gpus=tuple(_gpu_sample(r, torch_index.get(r.index), job, unknown_pids)
                   for r in gpus),
        procs=tree.procs,
        cpu_pct_total=round(tree.cpu_pct_total, 1) if tree.cpu_pct_total is not None else None,
        rss_bytes_total=tree.rss_bytes_total, threads_total=tree.threads_total,
        events=tuple(events) + extra_events, machine_cpu_pct=machine_cpu_pct,
        cpu_wait_pct_total=tree.cpu_wait_pct_total)
