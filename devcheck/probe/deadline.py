"""The one timeout mechanism of the probes: run jobs concurrently, each bounded by a deadline.

Every probe is a plain synchronous function. Only here does one get a thread and a time
limit, so there is one thread per probe, one timeout, and one wording for it
(:func:`timed_out`). A probe that hangs past the deadline is abandoned (a daemon thread: a
wedged driver call cannot be cancelled, and must not keep the process alive), and its job's
``cancel`` runs (the torch probe kills its child process there). A probe that raises, even
``SystemExit`` or ``KeyboardInterrupt`` from a broken library, becomes its ``on_fail`` fact,
with the exception named; nothing is printed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def timed_out(what: str, seconds: float) -> str:
    """The one wording for a timeout: "NVML query timed out after 5s"."""
    return f"{what} timed out after {seconds:g}s"


def describe(exc: BaseException) -> str:
    """An exception as one line: "SystemExit: 3", "RuntimeError: boom"."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class Job(Generic[T]):
    """One probe to run: ``fn`` gives its facts; ``on_fail(why)`` the facts when it cannot.

    ``what`` names the probe in the failure text; ``cancel`` (optional) is called once when
    the deadline passes, to stop work that can be stopped (a child process, whose pid is in
    ``pids`` so that other probes can tell it from a rival process).
    """

    what: str
    fn: Callable[[], T]
    on_fail: Callable[[str], T]
    cancel: Callable[[], None] | None = None
    pids: tuple[int, ...] = ()


class _Running(Generic[T]):
    def __init__(self, name: str, job: Job[T]) -> None:
        self.job = job
        self.result: list[T] = []
        self.failure: list[str] = []
        self.thread = threading.Thread(target=self._work, name=f"devcheck-{name}", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            self.result.append(self.job.fn())
        except BaseException as exc:  # probes never raise; a library's SystemExit still might
            self.failure.append(f"{self.job.what} failed: {describe(exc)}")

    def finish(self, remaining_s: float, timeout_s: float) -> T:
        self.thread.join(max(0.0, remaining_s))
        if self.result:
            return self.result[0]
        if self.failure:
            return self.job.on_fail(self.failure[0])
        if self.job.cancel is not None:
            try:
                self.job.cancel()
            except Exception:  # noqa: S110 - cancelling is best effort; the fact says why
                pass
        return self.job.on_fail(timed_out(self.job.what, timeout_s))


def run_jobs(jobs: Mapping[str, Job[Any]], timeouts_s: Mapping[str, float]) -> dict[str, Any]:
    """Start every job now, concurrently; return each one's facts within its own timeout.

    ``timeouts_s[name]`` is measured from the common start, so the total wall time is the
    largest timeout, not their sum.
    """
    started = time.monotonic()
    running = {name: _Running(name, job) for name, job in jobs.items()}
    out: dict[str, Any] = {}
    for name, run in running.items():
        limit = timeouts_s[name]
        out[name] = run.finish(limit - (time.monotonic() - started), limit)
    return out


def run_job(job: Job[T], timeout_s: float) -> T:
    """One job with a time limit (the same mechanism as :func:`run_jobs`)."""
    result: T = run_jobs({"probe": job}, {"probe": timeout_s})["probe"]
    return result
