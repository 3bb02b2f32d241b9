"""Per-epoch GPU figures for a training loop: ``softmax train --watch``.

A :class:`~devcheck.run.watcher.Watch` samples in the background; at each epoch's end the
loop calls :meth:`EpochWatch.epoch_end` and gets that epoch's figures (the samples since
the previous call) as a JSON-ready dict for its metrics file. No work in the training
step itself: the loop only calls this once per epoch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any

from devcheck.run.sampler import Sampler
from devcheck.run.stats import Accumulator
from devcheck.run.timeline import Sample
from devcheck.run.watcher import Watch


class EpochWatch:
    """``with EpochWatch() as ew: ... metrics.update(ew.epoch_end())`` once per epoch."""

    def __init__(self, interval: float = 0.25,
                 import_pynvml: Callable[[], ModuleType] | None = None) -> None:
        self._lock = threading.Lock()
        self._acc: Accumulator | None = None
        self._sampler: Sampler | None = None
        self.watch = Watch(interval, label="softmax train --watch", on_sample=self._add,
                           import_pynvml=import_pynvml)

    def __enter__(self) -> EpochWatch:
        self.watch.start()
        self._sampler = self.watch.sampler
        with self._lock:
            self._acc = self._fresh()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.watch.stop()

    def _fresh(self) -> Accumulator | None:
        return self._sampler.accumulator() if self._sampler is not None else None

    def _add(self, sample: Sample) -> None:
        with self._lock:
            if self._acc is not None:
                self._acc.add(sample)

    def epoch_end(self) -> dict[str, Any]:
        """The figures since the last call: ``watch_samples``, ``gpu_util_mean_pct`` and
        ``gpu_memory_peak_bytes`` / ``gpu_job_memory_peak_bytes`` over the GPUs the job
        used (None when it used none), ``cpu_cores_mean``, and per GPU ``gpus``."""
        if self._sampler is not None:
            self._sampler.tick_now()  # the epoch's last moment, however short the epoch
        with self._lock:
            acc, self._acc = self._acc, self._fresh()
        if acc is None:
            return {"watch_samples": 0, "gpu_util_mean_pct": None,
                    "gpu_memory_peak_bytes": None, "gpu_job_memory_peak_bytes": None,
                    "cpu_cores_mean": None, "gpus": []}
        st = acc.freeze()
        used = [g for g in st.gpus if g.job_samples]
        utils = [g.util_mean_pct for g in used if g.util_mean_pct is not None]
        peaks = [g.memory_peak_bytes for g in used if g.memory_peak_bytes is not None]
        job = [g.job_memory_peak_bytes for g in used if g.job_memory_peak_bytes is not None]
        return {
            "watch_samples": st.samples,
            "gpu_util_mean_pct": round(sum(utils) / len(utils), 1) if utils else None,
            "gpu_memory_peak_bytes": max(peaks) if peaks else None,
            "gpu_job_memory_peak_bytes": max(job) if job else None,
            "cpu_cores_mean": round(st.host.cpu_pct_mean / 100, 2)
            if st.host.cpu_pct_mean is not None else None,
            "gpus": [{"index": g.index, "torch_index": g.torch_index,
                      "util_mean_pct": g.util_mean_pct,
                      "memory_peak_bytes": g.memory_peak_bytes,
                      "job_memory_peak_bytes": g.job_memory_peak_bytes} for g in used],
        }


def describe(figures: dict[str, Any]) -> str:
    """One line for an epoch's figures: "GPU 0: 43% kernel-active, peak memory 1.2 GiB
    (the job's 0.9 GiB)", or "no GPU used; CPU 0.95 cores"."""
    from devcheck.run.verdicts import size

    parts = [f"GPU {g['index']}: "
             + ("?" if g["util_mean_pct"] is None else f"{g['util_mean_pct']:.0f}%")
             + f" kernel-active, peak memory {size(g['memory_peak_bytes'])}"
             + (f" (the job's {size(g['job_memory_peak_bytes'])})"
                if g["job_memory_peak_bytes"] is not None else "")
             for g in figures.get("gpus", [])]
    if not parts:
        parts = ["no GPU used"]
    if figures.get("cpu_cores_mean") is not None:
        parts.append(f"CPU {figures['cpu_cores_mean']:.2f} cores")
    return "; ".join(parts)
