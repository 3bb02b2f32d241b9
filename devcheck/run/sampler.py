"""The sampler thread: every ``interval_s``, read NVML and the job's process tree.

It runs beside the job (``devcheck run``) or beside the caller's own code
(``devcheck.watch()``) and must cost next to nothing: NVML handles stay open, the tree is
walked through /proc, and the schedule is drift-free (``Event.wait`` until the next tick,
so a slow tick does not shift the following ones). Everything that can go wrong inside a
tick becomes an :class:`~devcheck.run.timeline.Event`; the thread never dies of it, and
the job never notices.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType

from devcheck.probe.nvml_sample import GpuReading, GpuStatic, NvmlSampler
from devcheck.probe.procs import MachineCpu, ProcessTree, allowed_cores
from devcheck.run.devices import VisibleMap, visible_map
from devcheck.run.stats import Accumulator
from devcheck.run.timeline import Event, Sample, build_sample


class Sampler:
    """Sample ``root_pid``'s tree and every GPU until :meth:`stop`.

    ``sink`` receives each :class:`Sample` in the sampler thread; ``on_open`` is called
    once NVML is open (before the first sample) with the sampler itself.
    ``visible_devices`` is the job's ``CUDA_VISIBLE_DEVICES`` (None = unset).
    """

    def __init__(self, root_pid: int, *, interval_s: float = 0.25, include_root: bool = True,
                 visible_devices: str | None = None, device_order: str | None = None,
                 sink: Callable[[Sample], None] | None = None,
                 on_open: Callable[[Sampler], None] | None = None,
                 import_pynvml: Callable[[], ModuleType] | None = None,
                 started: float | None = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.root_pid, self.interval_s, self.include_root = root_pid, interval_s, include_root
        self._visible_setting, self._device_order = visible_devices, device_order
        self._sink, self._on_open = sink, on_open
        self._nvml = NvmlSampler(import_pynvml)
        self.started_mono = started if started is not None else time.monotonic()
        self.started_unix = time.time() - (time.monotonic() - self.started_mono)
        self.gpus: tuple[GpuStatic, ...] = ()
        self.visible = VisibleMap({}, visible_devices)
        self.nvml_error: str | None = None
        self.allowed_cores = allowed_cores(root_pid)
        self.samples = 0
        self.open_cpu_s = 0.0  # CPU time to import psutil/pynvml and open NVML (once)
        self.thread_cpu_s = 0.0  # CPU time of the sampling loop itself (after opening)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: take a sample now (tick_now) or stop
        self.opened = threading.Event()
        self._pending: list[Event] = []
        self._lock = threading.Lock()
        self._job_pids: set[int] = set()
        self._machine = MachineCpu()
        self._thread = threading.Thread(target=self._run, name="devcheck-sampler", daemon=True)

    @property
    def nvml_available(self) -> bool:
        return self._nvml.available

    def post_event(self, kind: str, message: str, pid: int | None = None) -> None:
        """Attach an event (e.g. a forwarded signal) to the next sample; thread-safe."""
        with self._lock:
            self._pending.append(Event(round(self.elapsed(), 3), kind, message, pid=pid))

    def job_pids(self) -> set[int]:
        """Every pid seen in the tree so far (a copy; thread-safe enough for a set copy)."""
        with self._lock:
            return set(self._job_pids)

    def accumulator(self) -> Accumulator:
        """Statistics set up with what opening found (GPUs, cores, NVML's error)."""
        return Accumulator(interval_s=self.interval_s, gpus=self.gpus,
                           allowed_cores=self.allowed_cores, nvml_error=self.nvml_error,
                           nvml_available=self.nvml_available, visible_note=self.visible.note,
                           machine_cores=os.cpu_count())

    def elapsed(self) -> float:
        return time.monotonic() - self.started_mono

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Take a last sample, close NVML, join the thread (a wedged driver costs at most
        ``timeout_s``: the thread is a daemon)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def tick_now(self, timeout_s: float = 2.0) -> bool:
        """Take a sample now, out of schedule, and wait for it (an epoch shorter than the
        interval still gets one). False when the thread is not running or too slow."""
        if not self._thread.is_alive() or self._stop.is_set():
            return False
        before = self.samples
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while self.samples == before and time.monotonic() < deadline:
            if not self._thread.is_alive():
                return False
            time.sleep(0.002)
        return self.samples != before

    def _open(self) -> list[Event]:
        events = [Event(0.0, e.kind, e.message, gpu=e.gpu) for e in self._nvml.open()]
        self.nvml_error = self._nvml.error
        self.gpus = self._nvml.gpus
        self.visible = visible_map(self._visible_setting, [g.uuid for g in self.gpus],
                                   self._device_order)
        return events

    def _tick(self, tree: ProcessTree, first_events: list[Event]) -> None:
        gpus, nvml_events = self._nvml.sample()
        reading = tree.sample()
        machine = self._machine.sample()
        with self._lock:
            self._job_pids.update(p.pid for p in reading.procs)
            pending, self._pending = self._pending, []
        now = time.monotonic()
        sample = build_sample(
            t_s=now - self.started_mono, time_unix=time.time(), gpus=gpus, tree=reading,
            torch_index=self.visible.torch_index, nvml_events=nvml_events,
            extra_pids=frozenset(self._job_pids), extra_events=tuple(first_events + pending),
            machine_cpu_pct=machine, unknown_pids=_unknown_pids(gpus))
        self.samples += 1
        if self._sink is not None:
            self._sink(sample)

    def _run(self) -> None:
        _lower_thread_priority()
        t0 = time.thread_time()
        first: list[Event] = []
        try:
            first = self._open()
            tree = ProcessTree(self.root_pid, include_root=self.include_root)
        except Exception as exc:  # never take the job down with us
            self.nvml_error = self.nvml_error or f"sampler failed to start: {exc!r}"
            self.opened.set()
            return
        try:
            if self._on_open is not None:
                self._on_open(self)
        finally:
            self.opened.set()
        t1 = time.thread_time()
        self.open_cpu_s = t1 - t0
        next_tick = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            try:
                self._tick(tree, first)
            except Exception as exc:
                self.post_event("sampler_error", f"a sample failed: {type(exc).__name__}: {exc}")
            first = []
            if stopping:
                break
            next_tick += self.interval_s
            now = time.monotonic()
            if next_tick < now:  # fell behind (a slow NVML call, a busy machine): skip the
                next_tick = now + self.interval_s  # missed ticks, never two in a row
            self._wake.wait(next_tick - now)
            self._wake.clear()
        self._nvml.close()
        self.thread_cpu_s = time.thread_time() - t1


def _unknown_pids(gpus: tuple[GpuReading, ...]) -> frozenset[int]:
    """Pids NVML listed that do not exist here: inside a container NVML may report the
    host's pids, and then no process of the job can be recognised by its pid."""
    listed = {p.pid for g in gpus for p in g.processes or ()}
    if not listed or not os.path.isdir("/proc/self"):
        return frozenset()
    return frozenset(pid for pid in listed if not os.path.exists(f"/proc/{pid}"))


def _lower_thread_priority(nice: int = 10) -> None:
    """Let the job win any fight for a CPU: on Linux a thread has its own nice value, so
    only this thread yields (the caller's own threads keep their priority). At most
    ``nice``: lower still and a busy machine would starve the sampling itself."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (OSError, AttributeError):
        pass


def job_environment_visible() -> tuple[str | None, str | None]:
    """This process's CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER (what a child inherits)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("CUDA_DEVICE_ORDER")
