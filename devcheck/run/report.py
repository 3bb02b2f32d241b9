"""The run's summary (``summary.json``) and the text printed at the end of a run.

Three questions, in the order a user asks them: which devices did my job really use,
how well (the verdicts, with evidence and a fix), and, when it crashed, why (the
captured stderr tail goes through ``devcheck explain``'s matcher, and an out-of-memory
error is shown next to what the samples saw on that GPU). Formatting only: the CLI and
the notebook integrations print.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from devcheck.facts import ToDict
from devcheck.run.stats import JobStats
from devcheck.run.timeline import SCHEMA_VERSION
from devcheck.run.verdicts import SHARE, Verdict, gib, gpu_label, size, used_gpus, verdicts

_OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "CUBLAS_STATUS_ALLOC_FAILED",
                "cudaErrorMemoryAllocation")


@dataclass(frozen=True)
class Crash(ToDict):
    """Why the job died, as far as its stderr tail and the samples tell."""

    exit_code: int
    signal: str | None  # "SIGKILL" when a signal ended it (often the kernel's OOM killer)
    pitfall: str | None  # the top match of `devcheck explain`
    title: str | None
    explanation: str | None  # explain's rendering of the top match
    out_of_memory: bool
    machine_facts: tuple[str, ...] = ()  # what the samples saw (GPU memory, other processes)
    stderr_tail: str = ""  # the last lines, for the JSON reader


@dataclass(frozen=True)
class RunSummary(ToDict):
    command: tuple[str, ...]
    exit_code: int | None  # as devcheck run exits: signals are 128+N
    duration_s: float
    out_dir: str | None
    devices: tuple[str, ...]  # one line per device the job used (or did not)
    stats: JobStats
    verdicts: tuple[Verdict, ...]
    crash: Crash | None = None
    kind: str = "run"  # "run" (devcheck run) or "watch" (devcheck.watch())

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps({"v": SCHEMA_VERSION, **self.to_dict()}, indent=indent,
                          separators=None if indent else (",", ":"))

    def __str__(self) -> str:
        return render_text(self, prefix="")


def device_lines(stats: JobStats) -> list[str]:
    """"the job never created a CUDA context: it ran on the CPU"; "GPU 0: 23% ..."."""
    lines: list[str] = []
    if not stats.samples:
        lines.append("no sample was taken: " + (stats.nvml_error or "the job ended first"))
    elif not stats.gpus:
        lines.append("no NVIDIA GPU here: the job ran on the CPU")
    elif not used_gpus(stats):
        if any(g.unknown_pid_share >= SHARE for g in stats.gpus):
            lines.append("NVML lists GPU processes by pids this container cannot see: "
                         "whether the job used a GPU is unknown")
            lines += [f"{gpu_label(g)}{f' ({g.name})' if g.name else ''}: "
                      f"{g.util_mean_pct:.0f}% kernel-active during the run, peak memory "
                      f"{gib(g.memory_peak_bytes)} / {gib(g.memory_total_bytes)} GiB"
                      for g in stats.gpus if g.util_mean_pct is not None]
        elif any(g.processes_listed for g in stats.gpus):
            lines.append("the job never created a CUDA context: it ran on the CPU")
        else:
            lines.append("NVML could not list GPU processes: whether the job used a GPU is "
                         "unknown")
    for g in used_gpus(stats):
        util = "?" if g.util_mean_pct is None else f"{g.util_mean_pct:.0f}%"
        name = f" ({g.name})" if g.name else ""
        line = (f"{gpu_label(g)}{name}: {util} kernel-active, peak memory "
                f"{gib(g.memory_peak_bytes)} / {gib(g.memory_total_bytes)} GiB "
                f"(the job's processes: {gib(g.job_memory_peak_bytes)} GiB)")
        if g.job_sm_util_mean_pct is not None:
            line += f", SM share {g.job_sm_util_mean_pct:.0f}%"
        lines.append(line)
    h = stats.host
    if h.cpu_pct_mean is None and stats.samples:
        lines.append(f"CPU: not measured ({stats.samples} sample(s) in {stats.duration_s:.2f} s: "
                     "a process's CPU % needs two samples at least 0.05 s apart)")
    if h.cpu_pct_mean is not None:
        cores = f" of {h.allowed_cores} allowed" if h.allowed_cores else ""
        lines.append(f"CPU: {h.cpu_pct_mean / 100:.2f}{cores} cores on average (peak "
                     f"{(h.cpu_pct_peak or 0) / 100:.2f}), {_n(h.processes_peak, 'process')}, "
                     f"{_n(h.threads_peak, 'thread')}, peak RSS {size(h.rss_peak_bytes)}"
                     + (f"; the whole machine: {h.machine_cpu_pct_mean / 100:.2f} of "
                        f"{h.machine_cores} cores busy" if h.machine_cpu_pct_mean is not None
                        and h.machine_cores else "")
                     + (f"; its busiest thread waited for a CPU "
                        f"{h.cpu_wait_pct_mean:.0f}% of the time" if h.cpu_wait_pct_mean
                        else ""))
    return lines


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("s") else "s")


def command_line(command: tuple[str, ...] | list[str], limit: int = 160) -> str:
    """The command on one line, shell-quoted, newlines shown as \\n, cut to ``limit``."""
    import shlex

    text = shlex.join(command).replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _oom_facts(stats: JobStats) -> list[str]:
    facts = []
    gpus = used_gpus(stats) or list(stats.gpus)
    for g in gpus:
        facts.append(f"{gpu_label(g)}: memory.used peaked at {gib(g.memory_peak_bytes)} / "
                     f"{gib(g.memory_total_bytes)} GiB; the job's processes "
                     f"{gib(g.job_memory_peak_bytes)} GiB")
        for o in g.others:
            facts.append(f"  another process, pid {o.pid}, held {gib(o.memory_peak_bytes)} GiB "
                         f"on {gpu_label(g)}: stop it or choose another GPU")
        if g.memory_total_bytes and not g.others:
            facts.append(f"  no other process on {gpu_label(g)}: the job alone filled it; "
                         "reduce the batch size or use mixed precision")
    if not gpus:
        facts.append("no GPU was sampled: this is host memory (RAM) or an MPS device")
    return facts


def signal_name(exit_code: int) -> str | None:
    if exit_code > 128:
        try:
            return signal.Signals(exit_code - 128).name
        except ValueError:
            return None
    return None


def build_crash(exit_code: int, stderr_tail: str, stats: JobStats) -> Crash | None:
    """Explain a non-zero exit from the job's last stderr output (never raises)."""
    if exit_code == 0:
        return None
    from devcheck.pitfalls.explain import explain_text, render

    try:
        matches = explain_text(stderr_tail, limit=1)
    except Exception:  # the explanation must never hide the job's own exit
        matches = []
    top = matches[0] if matches else None
    oom = any(m in stderr_tail for m in _OOM_MARKERS)
    facts = tuple(_oom_facts(stats)) if oom else ()
    sig = signal_name(exit_code)
    if sig == "SIGKILL" and not oom:
        facts += ("killed by SIGKILL: when nobody sent it, the kernel's OOM killer did "
                  f"(peak RSS of the job {size(stats.host.rss_peak_bytes)}); "
                  "`dmesg | grep -i oom` tells",)
    lines = stderr_tail.strip().splitlines()[-20:]
    return Crash(exit_code=exit_code, signal=sig, pitfall=top.id if top else None,
                 title=top.title if top else None,
                 explanation=render([top], len(stderr_tail)) if top else None,
                 out_of_memory=oom, machine_facts=facts, stderr_tail="\n".join(lines))


def summarize(command: list[str], exit_code: int | None, stats: JobStats,
              out_dir: str | None, stderr_tail: str = "", kind: str = "run",
              duration_s: float | None = None) -> RunSummary:
    """Everything the end of a run reports; ``duration_s`` defaults to the last sample's
    time (``devcheck run`` passes the job's own wall time)."""
    crash = build_crash(exit_code, stderr_tail, stats) if exit_code else None
    return RunSummary(command=tuple(command), exit_code=exit_code,
                      duration_s=round(duration_s if duration_s is not None
                                       else stats.duration_s, 3), out_dir=out_dir,
                      devices=tuple(device_lines(stats)), stats=stats,
                      verdicts=tuple(verdicts(stats)), crash=crash, kind=kind)


_MARK = {"error": "x", "warn": "!", "info": "i", "ok": "+"}


def render_text(s: RunSummary, *, prefix: str = "[devcheck] ",
                files: Sequence[str] | None = None) -> str:
    """The end-of-run summary a person reads; ``files``: what the run really wrote (a plot
    skipped with --no-plot or lost to a full disk is not promised)."""
    out = [f"devcheck run: {command_line(s.command)}" if s.kind == "run"
           else " ".join(s.command)]
    status = "" if s.exit_code is None else f", exit code {s.exit_code}"
    if s.crash and s.crash.signal:
        status += f" ({s.crash.signal})"
    out.append(f"{s.duration_s:.1f} s, {s.stats.samples} samples every "
               f"{s.stats.interval_s:g} s{status}")
    out += [""] + [f"  {line}" for line in s.devices]
    if s.stats.visible_note:
        out.append(f"  note: {s.stats.visible_note}")
    for v in s.verdicts:
        if v.title in s.devices:  # "no NVIDIA GPU here: ...": already said above
            continue
        out += ["", f"[{_MARK[v.severity]}] {v.title}", f"    evidence: {v.evidence}"]
        if v.fix:
            out.append(f"    fix: {v.fix}")
        if v.field:
            out.append(f"    rests on: {v.field}")
        if v.caveat:
            out.append(f"    caveat: {v.caveat}")
        if v.pitfall:
            out.append(f"    see: devcheck pitfalls show {v.pitfall}")
    lost = [e for e in s.stats.events if e.kind in ("gpu_lost", "sampler_error", "field_error")]
    for e in lost[:5]:
        out.append(f"  event at {e.t_s:.1f} s: {e.message}")
    if s.crash:
        out += _crash_text(s.crash)
    if s.out_dir:
        if files is None:  # not told which were written
            written = ""
        elif files:
            written = f" ({', '.join(files)})"
        else:
            written = " (nothing could be written)"
        out += ["", f"output folder: {s.out_dir}{written}"]
    return "\n".join(prefix + line if line else prefix.rstrip() for line in out)


def _crash_text(c: Crash) -> list[str]:
    out = ["", f"The job failed (exit code {c.exit_code}"
           + (f", {c.signal}" if c.signal else "") + ")."]
    if c.explanation:
        out += c.explanation.splitlines()
    elif not c.out_of_memory:
        out.append("No known device pitfall matches its last stderr lines "
                   "(`devcheck explain FILE` takes a longer log).")
    if c.out_of_memory:
        out += ["", "Out of GPU memory. What the samples saw on this machine:"]
    elif c.machine_facts:
        out.append("")
    out += [f"  {f}" for f in c.machine_facts]
    return out
