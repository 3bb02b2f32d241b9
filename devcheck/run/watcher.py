"""``with devcheck.watch() as w:`` — the sampler for code running in this very process.

For notebooks and scripts that cannot be wrapped in ``devcheck run``: a background thread
samples the calling process and its children (DataLoader workers) and every GPU, exactly
as ``devcheck run`` does, and the same verdicts read the result::

    with devcheck.watch(interval=0.25) as w:
        train(model, loader, device)
    print(w.summary())          # which devices were used, how well, verdicts
    w.plot("timeline.png")      # GPU util, GPU memory, CPU
    w.timeline                  # the samples (devcheck.run.timeline.Sample)

Each sample is also kept in memory (``max_samples``, the oldest dropped first): at 4 Hz
100 000 samples are seven hours.
"""

from __future__ import annotations

import copy
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, TracebackType

from devcheck.run.plot import Series
from devcheck.run.plot import plot as _plot
from devcheck.run.report import RunSummary, render_text, summarize
from devcheck.run.sampler import Sampler
from devcheck.run.stats import Accumulator, JobStats
from devcheck.run.timeline import Sample


class Watch:
    """Samples while inside ``with``; results stay readable after it."""

    def __init__(self, interval: float = 0.25, *, pid: int | None = None,
                 max_samples: int = 100_000, label: str = "devcheck.watch()",
                 on_sample: Callable[[Sample], None] | None = None,
                 import_pynvml: Callable[[], ModuleType] | None = None) -> None:
        if not isinstance(interval, (int, float)) or not math.isfinite(interval) \
                or not 0.01 <= interval <= 3600:
            raise ValueError(f"watch(interval={interval!r}): expected seconds between samples, "
                             "a finite number in [0.01, 3600], e.g. 0.25 (4 Hz)")
        self.interval = float(interval)
        self.pid = pid if pid is not None else os.getpid()
        self.label = label
        self._samples: deque[Sample] = deque(maxlen=max_samples)
        self._series = Series()
        self._acc: Accumulator | None = None
        self._lock = threading.Lock()
        self._on_sample = on_sample
        self._import = import_pynvml
        self._sampler: Sampler | None = None

    # -- context manager --------------------------------------------------------------
    def __enter__(self) -> Watch:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Watch:
        if self._sampler is not None:
            raise RuntimeError("this watch is already running; use one watch per with-block")
        self._sampler = Sampler(self.pid, interval_s=self.interval, sink=self._sink,
                                on_open=self._opened,
                                visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                                device_order=os.environ.get("CUDA_DEVICE_ORDER"),
                                import_pynvml=self._import)
        self._sampler.start()
        self._sampler.opened.wait(10.0)  # the first sample follows at once
        return self

    def stop(self) -> None:
        """Take a last sample and stop the thread (idempotent)."""
        if self._sampler is not None:
            self._sampler.stop()

    def _opened(self, s: Sampler) -> None:
        with self._lock:
            self._acc = s.accumulator()
            self._series.allowed_cores = s.allowed_cores

    def _sink(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)
            self._series.add(sample)
            if self._acc is not None:
                self._acc.add(sample)
        if self._on_sample is not None:
            try:
                self._on_sample(sample)
            except Exception:  # a caller's callback must not stop the sampling
                pass

    # -- results ---------------------------------------------------------------------
    @property
    def timeline(self) -> list[Sample]:
        """The samples so far (a copy), oldest first."""
        with self._lock:
            return list(self._samples)

    @property
    def sampler(self) -> Sampler | None:
        """The running (or finished) sampler: its GPUs, CUDA_VISIBLE_DEVICES mapping."""
        return self._sampler

    @property
    def sampler_cpu_s(self) -> float:
        """The sampler thread's own CPU seconds (after :meth:`stop`)."""
        return self._sampler.thread_cpu_s if self._sampler is not None else 0.0

    def stats(self) -> JobStats:
        with self._lock:
            acc = self._acc or Accumulator(interval_s=self.interval)
            return acc.freeze()

    def summary(self) -> RunSummary:
        """Devices used, how well, verdicts; ``print()`` it for the text."""
        return summarize([self.label], None, self.stats(), None, kind="watch")

    def report(self) -> str:
        return render_text(self.summary(), prefix="")

    def plot(self, path: str | Path = "timeline.png") -> Path:
        """Draw GPU utilisation, GPU memory and CPU over time to ``path`` (atomically)."""
        with self._lock:  # a copy: the sampler may still be appending
            series = copy.deepcopy(self._series)
        return _plot(series, path, title=self.label)


def parse_magic_line(line: str) -> tuple[float, str | None]:
    """``%%devcheck_watch [-i SECONDS] [--plot FILE]`` -> (interval, plot path).

    Raises ValueError with a one-line message naming the bad value and the usage."""
    import shlex

    usage = "usage: %%devcheck_watch [-i SECONDS] [--plot FILE]"
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"cannot parse {line!r} ({exc}); {usage}") from None
    interval, plot_path = 0.25, None
    while words:
        word = words.pop(0)
        if word in ("-i", "--interval", "--plot") and not words:
            raise ValueError(f"{word} needs a value; {usage}")
        if word in ("-i", "--interval"):
            value = words.pop(0)
            try:
                interval = float(value)
            except ValueError:
                raise ValueError(f"-i {value!r} is not a number of seconds; {usage}") from None
            if not (math.isfinite(interval) and 0.01 <= interval <= 3600):
                raise ValueError(f"-i {value} is outside [0.01, 3600] seconds; {usage}")
        elif word == "--plot":
            plot_path = words.pop(0)
        else:
            raise ValueError(f"unknown argument {word!r}; {usage}")
    return interval, plot_path


def watch(interval: float = 0.25, **kwargs: object) -> Watch:
    """``with devcheck.watch(interval=0.25) as w: ...``; see :class:`Watch`."""
    return Watch(interval, **kwargs)  # type: ignore[arg-type]
