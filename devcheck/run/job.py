"""``devcheck run``'s engine: start the job, sample it, and write what was seen.

The order matters for the start-up budget: the child is started first (only the light
runner module is imported by then), then the sampler (psutil, pynvml), and matplotlib only
at the very end, for the plot. Output files go through :mod:`devcheck.fileio`:
``timeline.jsonl`` is streamed to a hidden temporary next to it (``.timeline.<pid>.tmp.jsonl``,
flushed every sample, so ``tail -f`` works) and renamed when the run ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING

from devcheck.fileio import OutputError, atomic_write_text, describe_os_error, temp_name
from devcheck.run import runner

if TYPE_CHECKING:  # imported lazily at run time (start-up budget)
    import subprocess

    from devcheck.run.keeper import Keeper
    from devcheck.run.plot import Series
    from devcheck.run.report import RunSummary


@dataclass(frozen=True)
class RunOutcome:
    job: runner.JobResult
    summary: RunSummary
    warnings: tuple[str, ...] = field(default=())
    files: tuple[str, ...] = field(default=())  # what was written into the output folder


def default_out_dir(now: datetime | None = None) -> Path:
    """``runs/devcheck-run-20261130-153001`` (``-2``, ``-3``... when it exists)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"devcheck-run-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def prepare_out_dir(path: Path) -> Path:
    """Create the output folder before the job starts: a typo fails in 0 s, not after a
    night of training. Raises OutputError."""
    if path.exists() and not path.is_dir():
        raise OutputError("output folder", path, "it is a file", "give a folder for --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError("output folder", path, describe_os_error(exc),
                          "choose another --out folder") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError("output folder", path, "it is not writable",
                          "choose another --out folder")
    return path


class _TimelineWriter:
    """The sampler's sink: one JSON line per sample, never an exception into the thread.

    The file is a hidden temporary next to ``timeline.jsonl`` (``tail -f`` works) renamed
    into place by :meth:`finish`; a full disk or ``ulimit -f`` mid-run keeps what was
    written and becomes a warning, never an exception after the job started."""

    def __init__(self, f: IO[str] | None, target: Path | None = None,
                 tmp: Path | None = None, error: str | None = None) -> None:
        self.f = f
        self.target, self.tmp = target, tmp
        self.error: str | None = error
        self.lines = 0
        # A sampler thread stuck in NVML can wake up after the footer and the file's close:
        # writes are serialised, and nothing is written once sealed.
        self._lock = threading.Lock()
        self._sealed = False

    def write(self, line: str) -> None:
        with self._lock:
            if self.f is None or self.error is not None or self._sealed:
                return
            try:
                self.f.write(line + "\n")
                self.f.flush()
                self.lines += 1
            except OSError as exc:  # disk full mid-run: stop writing, keep the job alive
                self.error = describe_os_error(exc)

    @classmethod
    def open(cls, target: Path | None) -> _TimelineWriter:
        if target is None:
            return cls(None)
        tmp = temp_name(target)
        try:
            return cls(open(tmp, "w", encoding="utf-8"), target, tmp)  # noqa: SIM115
        except OSError as exc:
            return cls(None, target, None, describe_os_error(exc))

    def finish(self) -> str | None:
        """Close and rename into place; the warning to print when the file is lost or
        incomplete (the job's outcome stands either way)."""
        with self._lock:
            self._sealed = True
            f, self.f = self.f, None
        if f is not None:
            try:
                f.close()
            except OSError as exc:  # the buffered tail could not be written
                self.error = self.error or describe_os_error(exc)
        if self.target is None:
            return None
        if self.tmp is not None:
            try:
                os.replace(self.tmp, self.target)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.tmp.unlink()
                return f"timeline.jsonl is lost: {describe_os_error(exc)}"
        if self.error:
            where = "could not be created" if self.tmp is None else "is incomplete"
            return f"{self.target} {where}: {self.error}"
        return None

    def seal(self, last_line: str) -> None:
        """Write the footer, then refuse every later write (a late sampler's included)."""
        self.write(last_line)
        with self._lock:
            self._sealed = True


def run_job(argv: list[str], *, interval_s: float = 0.25, out_dir: Path | None,
            plot: bool = True, env: dict[str, str] | None = None,
            import_pynvml: Callable[[], ModuleType] | None = None,
            tee_target_fd: int = 2, dedicated: bool = False) -> RunOutcome:
    """Run ``argv`` to its end under the sampler; raises runner.LaunchError / OutputError
    only before the job started.

    ``dedicated``: this process exists only to run the job (the CLI): it becomes a child
    subreaper and kills every descendant left at the end, and a keeper process ends the
    job if this one is killed (Linux; the job's environment gets ``DEVCHECK_RUN_ID``). A
    library caller (tests, a notebook) keeps its other children: only the job's group and
    tree are ended, and no keeper is started."""
    started = time.monotonic()
    token = None
    if dedicated:
        env, token = runner.tag_environment(env)
    with contextlib.ExitStack() as stack:
        forwarder = stack.enter_context(runner.SignalForwarder())
        proc = runner.start(argv, env=env)
        forwarder.attach(proc.pid)
        keeper = None
        if dedicated:
            if runner.become_subreaper():
                forwarder.reap_orphans()
            with contextlib.suppress(OSError):
                os.nice(10)  # the job (started above, at normal priority) wins every CPU fight
            from devcheck.run import keeper as keeper_mod  # after the start: not on its path

            keeper = keeper_mod.start(proc.pid, token)  # before any thread exists: a fork
        # From here on the job runs: nothing may raise past us and cost its exit code.
        writer = _TimelineWriter.open(out_dir / "timeline.jsonl" if out_dir else None)
        try:
            outcome = _sample_and_wait(proc, argv, started, interval_s, out_dir, plot,
                                       env if env is not None else dict(os.environ),
                                       import_pynvml, tee_target_fd, writer, dedicated,
                                       forwarder, keeper, token)
        finally:
            lost = writer.finish()
    if out_dir is None:
        return outcome
    files = tuple(name for name in ("timeline.jsonl", "summary.json", "timeline.png")
                  if (out_dir / name).is_file())
    return dataclasses.replace(outcome, files=files,
                               warnings=outcome.warnings + ((lost,) if lost else ()))


def _sample_and_wait(proc: subprocess.Popen[bytes], argv: list[str], started: float,
                     interval_s: float, out_dir: Path | None, plot: bool, env: dict[str, str],
                     import_pynvml: Callable[[], ModuleType] | None, tee_target_fd: int,
                     writer: _TimelineWriter, dedicated: bool,
                     forwarder: runner.SignalForwarder,
                     keeper: Keeper | None = None, token: str | None = None) -> RunOutcome:
    from devcheck.probe.procs import proc_children
    from devcheck.run import timeline
    from devcheck.run.jobprocs import Tagged
    from devcheck.run.plot import Series
    from devcheck.run.report import summarize
    from devcheck.run.sampler import Sampler
    from devcheck.run.stats import Accumulator

    series = Series()
    acc_box: list[Accumulator] = []

    def on_open(s: Sampler) -> None:
        acc_box.append(s.accumulator())
        series.allowed_cores = s.allowed_cores
        writer.write(timeline.header(
            command=argv, pid=proc.pid, interval_s=interval_s, allowed_cores=s.allowed_cores,
            gpus=s.gpus, torch_index=s.visible.torch_index, visible_setting=s.visible.setting,
            visible_note=s.visible.note, nvml_error=s.nvml_error,
            started_unix=s.started_unix))

    def sink(sample: timeline.Sample) -> None:
        if acc_box:
            acc_box[0].add(sample)
        series.add(sample)
        writer.write(sample.to_json())
        if keeper is not None:  # what it must end should devcheck be killed
            keeper.report([p.pid for p in sample.procs]  # with the orphans it adopted
                          + (proc_children(os.getpid()) or []))

    sampler = Sampler(proc.pid, interval_s=interval_s, sink=sink, on_open=on_open,
                      visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
                      device_order=env.get("CUDA_DEVICE_ORDER"),
                      import_pynvml=import_pynvml, started=started)
    for name in forwarder.forwarded:  # signals that came before the sampler existed
        sampler.post_event("signal_forwarded", f"{name} forwarded to the job")
    forwarder.on_signal = lambda name: sampler.post_event("signal_forwarded",
                                                          f"{name} forwarded to the job")
    sampler.start()
    try:
        job = runner.supervise(proc, started=started, tee_target_fd=tee_target_fd,
                               job_pids=sampler.job_pids, own_children=dedicated,
                               forwarder=forwarder,
                               spare=frozenset((keeper.pid,)) if keeper else frozenset(),
                               tagged=Tagged(token) if token else None)
        if keeper is not None:  # the job and its leftovers are gone: a normal end
            keeper.done()
    finally:
        sampler.stop()
    acc = acc_box[0] if acc_box else Accumulator(
        interval_s=interval_s, nvml_error=sampler.nvml_error or (
            "the sampler never started: NVML (nvmlInit) did not answer while the job ran, "
            "a wedged driver? `devcheck doctor` checks it"))
    writer.seal(timeline.footer(exit_code=job.exit_code, duration_s=job.duration_s,
                                samples=sampler.samples))
    stats = acc.freeze()
    summary = summarize(argv, job.exit_code, stats, str(out_dir) if out_dir else None,
                        job.stderr_tail, duration_s=job.duration_s)
    warnings: list[str] = []  # the timeline's own, once it is closed (run_job)
    if out_dir is not None:
        warnings += _write_outputs(out_dir, summary, series, plot, argv)
    return RunOutcome(job=job, summary=summary, warnings=tuple(warnings))


def _write_outputs(out_dir: Path, summary: RunSummary, series: Series, plot: bool,
                   argv: list[str]) -> list[str]:
    from devcheck.run.plot import plot as draw
    from devcheck.run.report import command_line

    warnings = []
    try:
        atomic_write_text(out_dir / "summary.json", summary.to_json() + "\n", "run summary")
    except OutputError as exc:
        warnings.append(str(exc))
    if plot:
        try:
            draw(series, out_dir / "timeline.png", title="devcheck run: " + command_line(argv, 95))
        except OutputError as exc:
            warnings.append(str(exc))
        except Exception as exc:  # a broken matplotlib must not cost the summary
            warnings.append(f"cannot draw timeline.png: {type(exc).__name__}: {exc}; "
                            "the data is in timeline.jsonl (or rerun with --no-plot)")
    return warnings
