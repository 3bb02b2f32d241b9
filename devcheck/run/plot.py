"""``timeline.png``: GPU utilisation, GPU memory and the job's CPU use over time.

matplotlib is imported here only, with the Agg backend, at the end of a run (importing it
costs ~0.3 s that must not delay the job's start). :class:`Series` keeps what the plot
needs in memory and halves its resolution whenever it grows past ``max_points``, so a
week-long run costs the same memory as a ten-minute one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from devcheck.fileio import atomic_path
from devcheck.mplbackend import file_backend
from devcheck.run.timeline import Sample

GiB = 1024**3


@dataclass
class Series:
    """Plot data: time, CPU (cores) and per NVML index GPU util % / memory GiB."""

    max_points: int = 20_000
    t: list[float] = field(default_factory=list)
    cpu_cores: list[float | None] = field(default_factory=list)
    machine_cores: list[float | None] = field(default_factory=list)
    rss_gib: list[float] = field(default_factory=list)
    util: dict[int, list[float | None]] = field(default_factory=dict)
    mem_gib: dict[int, list[float | None]] = field(default_factory=dict)
    job_mem_gib: dict[int, list[float | None]] = field(default_factory=dict)
    mem_total_gib: dict[int, float] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    allowed_cores: int | None = None
    _stride: int = 1
    _seen: int = 0

    def add(self, s: Sample) -> None:
        self._seen += 1
        if (self._seen - 1) % self._stride:
            return
        n = len(self.t)
        self.t.append(s.t_s)
        self.cpu_cores.append(s.cpu_pct_total / 100 if s.cpu_pct_total is not None else None)
        self.machine_cores.append(s.machine_cpu_pct / 100 if s.machine_cpu_pct is not None
                                  else None)
        self.rss_gib.append(s.rss_bytes_total / GiB)
        for g in s.gpus:
            for series, value in (
                    (self.util, g.util_gpu_pct),
                    (self.mem_gib, None if g.memory_used_bytes is None
                     else g.memory_used_bytes / GiB),
                    (self.job_mem_gib, None if g.job_memory_bytes is None
                     else g.job_memory_bytes / GiB)):
                series.setdefault(g.index, [None] * n).append(
                    None if g.lost else (float(value) if value is not None else None))
            if g.memory_total_bytes:
                self.mem_total_gib[g.index] = g.memory_total_bytes / GiB
            self.labels.setdefault(g.index, f"GPU {g.index}" + (
                f" (cuda:{g.torch_index})" if g.torch_index not in (None, g.index) else ""))
        for series in (self.util, self.mem_gib, self.job_mem_gib):
            for values in series.values():
                values.extend([None] * (n + 1 - len(values)))
        if len(self.t) >= 2 * self.max_points:
            self._halve()

    def _halve(self) -> None:
        self._stride *= 2
        self.t, self.cpu_cores, self.rss_gib = self.t[::2], self.cpu_cores[::2], \
            self.rss_gib[::2]
        self.machine_cores = self.machine_cores[::2]
        for series in (self.util, self.mem_gib, self.job_mem_gib):
            for k in series:
                series[k] = series[k][::2]


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def plot(series: Series, path: Path | str, *, title: str = "") -> Path:
    """Draw the timeline to ``path`` (PNG, or any suffix matplotlib knows), atomically.

    Raises :class:`devcheck.fileio.OutputError` when the file cannot be written."""
    file_backend()  # its note is the trainer's to print; a file needs no backend
    from matplotlib.figure import Figure

    gpus = sorted(series.util)
    rows = 3 if gpus else 2
    fig = Figure(figsize=(9, 2.2 * rows + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True)
    t = series.t
    if gpus:
        ax_u, ax_m, ax_c = axes
        for i in gpus:
            ax_u.plot(t, _nan(series.util[i]), lw=1.2, label=series.labels.get(i, f"GPU {i}"))
            line, = ax_m.plot(t, _nan(series.mem_gib[i]), lw=1.2,
                              label=f"{series.labels.get(i, f'GPU {i}')} memory.used")
            if any(v is not None for v in series.job_mem_gib.get(i, [])):
                ax_m.plot(t, _nan(series.job_mem_gib[i]), lw=1, ls=":", color=line.get_color(),
                          label="the job's processes")
            if i in series.mem_total_gib:
                ax_m.axhline(series.mem_total_gib[i], color=line.get_color(), ls="--", lw=0.8)
        ax_u.set_ylabel("utilization.gpu %")
        ax_u.set_ylim(-2, 102)
        ax_u.set_title("GPU: share of time any kernel ran (not SM occupancy)", fontsize=9,
                       loc="left")
        ax_u.legend(fontsize=7, loc="upper right")
        ax_m.set_ylabel("GPU memory GiB")
        ax_m.legend(fontsize=7, loc="upper right")
    else:
        ax_r, ax_c = axes
        ax_r.plot(t, series.rss_gib, lw=1.2, color="tab:purple")
        ax_r.set_ylabel("RSS GiB")
        ax_r.set_title("no NVIDIA GPU sampled: the job's host memory", fontsize=9, loc="left")
    ax_c.plot(t, _nan(series.cpu_cores), lw=1.2, color="tab:green", label="the job's processes")
    if any(v is not None for v in series.machine_cores):
        ax_c.plot(t, _nan(series.machine_cores), lw=0.8, color="tab:red", alpha=0.6,
                  label="the whole machine")
    if series.allowed_cores:
        ax_c.axhline(series.allowed_cores, color="gray", ls="--", lw=0.8,
                     label=f"{series.allowed_cores} allowed cores")
    ax_c.set_ylabel("CPU cores")
    ax_c.set_xlabel("seconds since start")
    ax_c.set_ylim(bottom=0)
    ax_c.legend(fontsize=7, loc="upper right")
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(path, "timeline plot") as tmp:
        fig.savefig(tmp)
    return Path(path)
