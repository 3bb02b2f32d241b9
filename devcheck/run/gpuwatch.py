"""``devcheck gpus --watch``: the GPUs, refreshed, as text or as a JSONL stream.

gpustat cannot combine ``--watch`` with ``--json``; here ``--json`` streams one JSON
object per line, flushed, so ``devcheck gpus --watch --json | jq`` or a log shipper reads
it live. The text view redraws in place on a terminal and appends blocks elsewhere.
:func:`frames` yields what to print (the CLI prints it); Ctrl-C ends the stream cleanly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from types import ModuleType

from devcheck.probe.nvml_sample import GpuReading, GpuStatic, NvmlEvent, NvmlSampler
from devcheck.run.timeline import SCHEMA_VERSION
from devcheck.run.verdicts import size

CLEAR = "\x1b[H\x1b[2J"


def _record(t: float, statics: tuple[GpuStatic, ...], readings: tuple[GpuReading, ...],
            events: list[NvmlEvent], error: str | None) -> dict[str, object]:
    by_index = {g.index: g for g in statics}
    gpus = []
    for r in readings:
        s = by_index.get(r.index)
        doc: dict[str, object] = {"index": r.index, "name": s.name if s else None,
                                  "uuid": s.uuid if s else None,
                                  "power_limit_w": s.power_limit_w if s else None}
        doc.update({k: v for k, v in vars(r).items() if k != "index"})
        doc["processes"] = None if r.processes is None else [vars(p) for p in r.processes]
        doc["throttle"] = list(r.throttle) if r.throttle is not None else None
        gpus.append(doc)
    return {"v": SCHEMA_VERSION, "kind": "gpus", "time_unix": round(t, 3), "gpus": gpus,
            "nvml_error": error, "events": [vars(e) for e in events]}


def _text(statics: tuple[GpuStatic, ...], readings: tuple[GpuReading, ...],
          events: list[NvmlEvent], names: Callable[[int], str]) -> str:
    by_index = {g.index: g for g in statics}
    lines = [time.strftime("%H:%M:%S") + "  utilization.gpu = share of time any kernel ran "
             "(not SM occupancy)"]
    for r in readings:
        s = by_index.get(r.index)
        head = f"[{r.index}] {(s.name if s else None) or '?'}"
        if r.lost:
            lines.append(f"{head}  LOST (stopped answering NVML)")
            continue
        util = "  ?%" if r.util_gpu_pct is None else f"{r.util_gpu_pct:3d}%"
        mem = f"{size(r.memory_used_bytes)} / {size(r.memory_total_bytes)}"
        parts = [head, f"util {util}", f"mem {mem}"]
        if r.temperature_c is not None:
            parts.append(f"{r.temperature_c} C")
        if r.power_w is not None:
            limit = s.power_limit_w if s else None
            parts.append(f"{r.power_w:.0f}" + (f"/{limit:.0f}" if limit else "") + " W")
        if r.sm_clock_mhz is not None:
            parts.append(f"{r.sm_clock_mhz} MHz")
        slow = [t for t in r.throttle or () if t != "gpu_idle"]
        if slow:
            parts.append("throttle: " + ",".join(slow))
        lines.append("  ".join(parts))
        for p in r.processes or ():
            sm = f"  SM {p.sm_util_pct}%" if p.sm_util_pct is not None else ""
            lines.append(f"      pid {p.pid:<8} {names(p.pid):<20} {size(p.used_memory_bytes)}{sm}")
    lines += [f"  event: {e.message}" for e in events]
    return "\n".join(lines)


def _namer() -> Callable[[int], str]:
    cache: dict[int, str] = {}

    def name(pid: int) -> str:
        if pid not in cache:
            try:
                import psutil

                cache[pid] = psutil.Process(pid).name()
            except Exception:  # another container's pid, or gone
                cache[pid] = "?"
        return cache[pid]
    return name


def frames(interval_s: float, as_json: bool, *, tty: bool = False,
           count: int | None = None,
           import_pynvml: Callable[[], ModuleType] | None = None) -> Iterator[str]:
    """Yield one frame per tick (a JSON line, or a text block, cleared first on a TTY).

    Without NVML: one frame that says why, then the stream ends (exit 0, as ``gpus``)."""
    nvml = NvmlSampler(import_pynvml)
    events = nvml.open()
    try:
        if not nvml.available:
            yield (json.dumps(_record(time.time(), (), (), events, nvml.error),
                              separators=(",", ":")) if as_json
                   else f"no NVIDIA GPU here: {nvml.error}")
            return
        names = _namer()
        next_tick, n = time.monotonic(), 0
        while count is None or n < count:
            readings, new = nvml.sample()
            events += new
            if as_json:
                yield json.dumps(_record(time.time(), nvml.gpus, readings, events, None),
                                 separators=(",", ":"))
            else:
                yield (CLEAR if tty else "") + _text(nvml.gpus, readings, events, names) + (
                    "" if tty else "\n")
            events, n = [], n + 1
            if count is not None and n >= count:
                break
            next_tick += interval_s
            time.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        nvml.close()
