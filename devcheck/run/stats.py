"""Streaming statistics over a timeline: what the summary and the verdicts rest on.

A run can last days at 4 samples a second, so samples are not kept: :class:`Accumulator`
folds each one into counters and short per-GPU series, and :meth:`Accumulator.freeze`
returns the frozen :class:`JobStats` the pure verdict rules read. The per-tick judgement
("is the GPU idle while the job's CPU side is saturated?") is made here, on each sample,
because a mean over the whole run would hide it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from devcheck.facts import ToDict
from devcheck.probe.nvml_sample import GpuStatic
from devcheck.run.timeline import Event, GpuSample, Sample

IDLE_UTIL_PCT = 50  # utilization.gpu below this = "the GPU waited" for that tick
BUSY_CORE_PCT = 85.0  # a process at >= 85% of one core is saturated (Python is one thread)
MAX_EVENTS = 500
WAIT_PCT = 50.0  # a main thread of the job waited >= half the time for a CPU


@dataclass(frozen=True)
class ProcStats(ToDict):
    pid: int
    name: str | None
    cpu_pct_mean: float | None  # 100 = one core
    cpu_pct_peak: float | None
    rss_peak_bytes: int | None
    gpu_memory_peak_bytes: int | None = None  # on any GPU (NVML's per-process number)


@dataclass(frozen=True)
class OtherProc(ToDict):
    """A process outside the job that held a context on a GPU the job used."""

    pid: int
    gpu: int
    memory_peak_bytes: int | None
    sm_util_peak_pct: int | None
    seen_share: float  # share of the job's samples on that GPU in which it was there


@dataclass(frozen=True)
class GpuStats(ToDict):
    index: int
    torch_index: int | None
    name: str | None
    samples: int
    job_samples: int  # ticks in which a process of the job held a context on it
    processes_listed: bool  # NVML listed processes at least once
    util_mean_pct: float | None  # over the job's ticks (all ticks if the job never came)
    util_median_pct: float | None
    util_memory_mean_pct: float | None
    job_sm_util_mean_pct: float | None  # per-process SM share (where NVML provides it)
    memory_peak_bytes: int | None  # device-wide memory.used peak
    memory_total_bytes: int | None
    job_memory_peak_bytes: int | None
    power_mean_w: float | None
    power_limit_w: float | None
    temperature_max_c: int | None
    sm_clock_min_mhz: int | None
    sm_clock_max_mhz: int | None
    throttle_share: dict[str, float] = field(default_factory=dict)  # over the job's ticks
    input_bound_share: float = 0.0  # GPU waited while the job's other processes were busy
    host_bound_share: float = 0.0  # GPU waited while the GPU-driving process was saturated
    others: tuple[OtherProc, ...] = ()
    lost_at_s: float | None = None
    unknown_pid_share: float = 0.0  # samples listing pids that do not exist here (container)


@dataclass(frozen=True)
class HostStats(ToDict):
    allowed_cores: int | None
    cpu_pct_mean: float | None  # the tree's total, 100 = one core
    cpu_pct_peak: float | None
    rss_peak_bytes: int  # summed over the tree: pages shared by workers count once each
    threads_peak: int
    processes_peak: int
    processes: tuple[ProcStats, ...] = ()  # the busiest first, at most 10
    machine_cores: int | None = None
    machine_cpu_pct_mean: float | None = None  # every process of the machine, 100 = one core
    cpu_wait_pct_mean: float | None = None  # per sample, the main thread that waited most
    contended_share: float = 0.0  # samples in which that wait was >= 50%


@dataclass(frozen=True)
class JobStats(ToDict):
    duration_s: float
    samples: int
    interval_s: float
    nvml_available: bool
    nvml_error: str | None
    gpus: tuple[GpuStats, ...]
    host: HostStats
    events: tuple[Event, ...]
    events_dropped: int = 0
    visible_note: str | None = None


class _Gpu:
    def __init__(self, static: GpuStatic | None, index: int) -> None:
        self.static, self.index = static, index
        self.torch_index: int | None = None
        self.samples = self.job_samples = 0
        self.listed = False
        self.util: list[int] = []
        self.util_job: list[int] = []
        self.memutil_job: list[int] = []
        self.sm_job: list[int] = []
        self.mem_peak: int | None = None
        self.mem_total: int | None = static.memory_total_bytes if static else None
        self.job_mem_peak: int | None = None
        self.power: list[float] = []
        self.temp_max: int | None = None
        self.clocks: list[int] = []
        self.throttle: dict[str, int] = {}
        self.input_idle = self.host_idle = 0
        self.others: dict[int, list[int | None]] = {}  # pid -> [mem peak, sm peak, seen]
        self.listed_samples = self.unknown_samples = 0
        self.lost_at: float | None = None


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class Accumulator:
    """Fold samples into statistics; :meth:`freeze` at any time (the watch API does)."""

    def __init__(self, *, interval_s: float, gpus: tuple[GpuStatic, ...] = (),
                 allowed_cores: int | None = None, nvml_error: str | None = None,
                 nvml_available: bool = False, visible_note: str | None = None,
                 machine_cores: int | None = None) -> None:
        self.interval_s, self.allowed_cores = interval_s, allowed_cores
        self.machine_cores = machine_cores
        self.machine: list[float] = []
        self.wait: list[float] = []
        self.contended = 0
        self.nvml_error, self.nvml_available = nvml_error, nvml_available
        self.visible_note = visible_note
        self._gpus = {g.index: _Gpu(g, g.index) for g in gpus}
        self.samples = 0
        self.last_t = 0.0
        self.cpu: list[float] = []
        self.rss_peak = self.threads_peak = self.procs_peak = 0
        self._procs: dict[int, list] = {}  # pid -> [name, cpu sum, n, cpu peak, rss peak, gmem]
        self.events: list[Event] = []
        self.events_dropped = 0

    def add_events(self, events: tuple[Event, ...] | list[Event]) -> None:
        for e in events:
            if e.kind in ("process_started", "process_exited"):
                continue  # kept in the timeline, too many for the summary
            if len(self.events) < MAX_EVENTS:
                self.events.append(e)
            else:
                self.events_dropped += 1

    def add(self, s: Sample) -> None:
        self.samples += 1
        self.last_t = max(self.last_t, s.t_s)
        self.add_events(s.events)
        if s.cpu_pct_total is not None:
            self.cpu.append(s.cpu_pct_total)
        if s.machine_cpu_pct is not None:
            self.machine.append(s.machine_cpu_pct)
        waits = [p.cpu_wait_pct for p in s.procs if p.cpu_wait_pct is not None]
        if waits:  # the process that waited most: a Python loop is one thread
            self.wait.append(max(waits))
            if max(waits) >= WAIT_PCT:
                self.contended += 1
        self.rss_peak = max(self.rss_peak, s.rss_bytes_total)
        self.threads_peak = max(self.threads_peak, s.threads_total)
        self.procs_peak = max(self.procs_peak, len(s.procs))
        for p in s.procs:
            rec = self._procs.setdefault(p.pid, [p.name, 0.0, 0, None, None, None])
            if p.cpu_pct is not None:
                rec[1] += p.cpu_pct
                rec[2] += 1
                rec[3] = p.cpu_pct if rec[3] is None else max(rec[3], p.cpu_pct)
            rec[4] = _max(rec[4], p.rss_bytes)
        on_gpu = {gp.pid for g in s.gpus for gp in (g.processes or ()) if gp.in_job}
        cpu_by_pid = {p.pid: p.cpu_pct or 0.0 for p in s.procs}
        driver_cpu = max((cpu_by_pid.get(pid, 0.0) for pid in on_gpu), default=0.0)
        workers_cpu = sum(c for pid, c in cpu_by_pid.items() if pid not in on_gpu)
        total = s.cpu_pct_total or 0.0
        cores_full = bool(self.allowed_cores) and total >= 0.85 * 100 * (self.allowed_cores or 1)
        workers_busy = workers_cpu >= BUSY_CORE_PCT or (cores_full and workers_cpu > 0)
        for g in s.gpus:
            self._add_gpu(g, s.t_s, driver_cpu, workers_busy)

    def _add_gpu(self, g: GpuSample, t: float, driver_cpu: float, workers_busy: bool) -> None:
        acc = self._gpus.setdefault(g.index, _Gpu(None, g.index))
        acc.torch_index = g.torch_index
        if g.lost:
            if acc.lost_at is None:
                acc.lost_at = t
            return
        acc.samples += 1
        acc.mem_peak = _max(acc.mem_peak, g.memory_used_bytes)
        acc.mem_total = g.memory_total_bytes or acc.mem_total
        if g.util_gpu_pct is not None:
            acc.util.append(g.util_gpu_pct)
        if g.processes is None:
            return
        acc.listed = True
        acc.listed_samples += 1
        acc.unknown_samples += any(p.unknown_pid for p in g.processes)
        if g.job_memory_bytes is None:
            return
        acc.job_samples += 1
        acc.job_mem_peak = _max(acc.job_mem_peak, g.job_memory_bytes)
        for gp in g.processes:
            if gp.in_job:
                rec = self._procs.get(gp.pid)
                if rec is not None:
                    rec[5] = _max(rec[5], gp.used_memory_bytes)
                continue
            o = acc.others.setdefault(gp.pid, [None, None, 0])
            o[0], o[1] = _max(o[0], gp.used_memory_bytes), _max(o[1], gp.sm_util_pct)
            o[2] = (o[2] or 0) + 1
        sm = [gp.sm_util_pct for gp in g.processes if gp.in_job and gp.sm_util_pct is not None]
        if sm:
            acc.sm_job.append(sum(sm))
        if g.power_w is not None:
            acc.power.append(g.power_w)
        acc.temp_max = _max(acc.temp_max, g.temperature_c)
        if g.sm_clock_mhz is not None:
            acc.clocks.append(g.sm_clock_mhz)
        for reason in g.throttle or ():
            acc.throttle[reason] = acc.throttle.get(reason, 0) + 1
        if g.util_memory_pct is not None:
            acc.memutil_job.append(g.util_memory_pct)
        if g.util_gpu_pct is not None:
            acc.util_job.append(g.util_gpu_pct)
            if g.util_gpu_pct < IDLE_UTIL_PCT:
                if workers_busy:
                    acc.input_idle += 1
                elif driver_cpu >= BUSY_CORE_PCT:
                    acc.host_idle += 1

    def freeze(self) -> JobStats:
        return JobStats(
            duration_s=round(self.last_t, 3), samples=self.samples, interval_s=self.interval_s,
            nvml_available=self.nvml_available, nvml_error=self.nvml_error,
            gpus=tuple(_gpu_stats(a) for _, a in sorted(self._gpus.items())),
            host=self._host(), events=tuple(self.events),
            events_dropped=self.events_dropped, visible_note=self.visible_note)

    def _host(self) -> HostStats:
        procs = []
        for pid, (name, total, n, peak, rss, gmem) in self._procs.items():
            procs.append(ProcStats(pid=pid, name=name,
                                   cpu_pct_mean=round(total / n, 1) if n else None,
                                   cpu_pct_peak=peak, rss_peak_bytes=rss,
                                   gpu_memory_peak_bytes=gmem))
        procs.sort(key=lambda p: -(p.cpu_pct_mean or 0.0))
        return HostStats(
            allowed_cores=self.allowed_cores,
            cpu_pct_mean=round(statistics.fmean(self.cpu), 1) if self.cpu else None,
            cpu_pct_peak=max(self.cpu) if self.cpu else None,
            rss_peak_bytes=self.rss_peak, threads_peak=self.threads_peak,
            processes_peak=self.procs_peak, processes=tuple(procs[:10]),
            machine_cores=self.machine_cores, machine_cpu_pct_mean=_mean(self.machine),
            cpu_wait_pct_mean=_mean(self.wait),
            contended_share=round(self.contended / len(self.wait), 3) if self.wait else 0.0)


def _mean(xs: list[int] | list[float]) -> float | None:
    return round(statistics.fmean(xs), 1) if xs else None


def _gpu_stats(a: _Gpu) -> GpuStats:
    util = a.util_job if a.job_samples else a.util
    n = a.job_samples or 1
    others = tuple(OtherProc(pid=pid, gpu=a.index, memory_peak_bytes=mem,
                             sm_util_peak_pct=sm, seen_share=round((seen or 0) / n, 3))
                   for pid, (mem, sm, seen) in sorted(a.others.items()))
    return GpuStats(
        index=a.index, torch_index=a.torch_index, name=a.static.name if a.static else None,
        samples=a.samples, job_samples=a.job_samples, processes_listed=a.listed,
        util_mean_pct=_mean(util),
        util_median_pct=float(statistics.median(util)) if util else None,
        util_memory_mean_pct=_mean(a.memutil_job),
        job_sm_util_mean_pct=_mean(a.sm_job),
        memory_peak_bytes=a.mem_peak, memory_total_bytes=a.mem_total,
        job_memory_peak_bytes=a.job_mem_peak, power_mean_w=_mean(a.power),
        power_limit_w=a.static.power_limit_w if a.static else None,
        temperature_max_c=a.temp_max,
        sm_clock_min_mhz=min(a.clocks) if a.clocks else None,
        sm_clock_max_mhz=max(a.clocks) if a.clocks else None,
        throttle_share={k: round(v / n, 3) for k, v in sorted(a.throttle.items())},
        input_bound_share=round(a.input_idle / n, 3) if a.job_samples else 0.0,
        host_bound_share=round(a.host_idle / n, 3) if a.job_samples else 0.0,
        others=others, lost_at_s=a.lost_at,
        unknown_pid_share=round(a.unknown_samples / a.listed_samples, 3)
        if a.listed_samples else 0.0)
