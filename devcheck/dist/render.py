"""``devcheck dist`` as text (nccl-tests-like tables) and as JSON (docs/dist.md). Pure.

Returns strings; the CLI prints them. The JSON is ``DistReport.to_dict()`` plus the
command, so its keys are the dataclass fields: added, never renamed.
"""

from __future__ import annotations

import json
from typing import Any

from devcheck.dist.bandwidth import human_size
from devcheck.dist.model import DistReport, LaunchResult, TopologyFacts
from devcheck.facts import Finding

_MARK = {"ok": "ok", "info": "info", "warn": "warn", "error": "ERROR"}
MiB = 1024**2


def to_json(report: DistReport, options: dict[str, Any] | None = None) -> str:
    """``options``: the resolved command-line options (``nproc`` after its default)."""
    data: dict[str, Any] = {"command": "dist", "options": dict(options or {}),
                            **report.to_dict()}
    return json.dumps(data, indent=2, sort_keys=False)


def _topology_lines(t: TopologyFacts) -> list[str]:
    gpus = (f"{t.gpu_count} GPU(s): {', '.join(sorted(set(t.gpu_names)))}" if t.gpu_count
            else f"no NVIDIA GPU ({t.nvml_error or 'NVML lists none'})")
    nccl = f"NCCL {t.nccl_version}" if t.nccl_version else "NCCL: not found"
    shm = f"/dev/shm {t.shm_total_bytes // MiB} MiB" if t.shm_total_bytes else "/dev/shm: ?"
    lines = [f"Host: {gpus}; {nccl}; {shm}"]
    for lk in t.links:
        exp = f"{lk.expected_busbw_gbps:.0f} GB/s" if lk.expected_busbw_gbps else "?"
        lines.append(f"  GPU{lk.gpu_a} <-> GPU{lk.gpu_b}: {lk.common_ancestor or '?':<10} "
                     f"NVLinks {lk.nvlinks:<2} P2P {lk.p2p_read or '?':<12} expect {exp}")
    return lines


def _launch_lines(r: LaunchResult) -> list[str]:
    lines = [f"Launch: {r.world_size} rank(s) via torch.distributed.run, backends "
             f"{'+'.join(r.backends)}, {r.duration_s:.1f} s; stages passed: "
             f"{', '.join(r.stages_passed) or 'none'}"]
    if r.checks:
        lines.append(f"  {'backend':<8}{'collective':<12}{'elements':>10}{'#wrong':>8}")
        lines += [f"  {c.backend:<8}{c.op:<12}{c.elements:>10}{c.wrong:>8}" for c in r.checks]
    if r.bandwidth:
        lines.append(f"  {'backend':<8}{'collective':<12}{'size':>8}{'time(us)':>12}"
                     f"{'algbw(GB/s)':>13}{'busbw(GB/s)':>13}")
        lines += [f"  {b.backend:<8}{b.op:<12}{human_size(b.size_bytes):>8}{b.time_us:>12.1f}"
                  f"{b.algbw_gbps:>13.3f}{b.busbw_gbps:>13.3f}" for b in r.bandwidth]
        lines.append("  busbw = algbw x 2(n-1)/n (all_reduce), (n-1)/n (all_gather), "
                     "1 (broadcast), as nccl-tests")
    if r.barrier_latency_us:
        lines.append("  barrier latency: " + ", ".join(
            f"{k} {v:.0f} us" for k, v in r.barrier_latency_us.items()))
    if r.hang is not None:
        for st in r.ranks:
            lines.append(f"  rank {st.rank}: {'finished' if st.finished else 'stopped at'} "
                         f"{st.last_event or 'start'} (stage {st.stage})"
                         + (f": {st.error}" if st.error else ""))
    return lines


def _finding_lines(findings: tuple[Finding, ...]) -> list[str]:
    lines = []
    for f in findings:
        lines.append(f"[{_MARK[f.severity]}] {f.title}")
        if f.evidence:
            lines.append(f"    evidence: {f.evidence}")
        if f.fix:
            lines.append(f"    fix: {f.fix}")
        if f.pitfall:
            lines.append(f"    see: devcheck pitfalls show {f.pitfall}")
    return lines


def to_text(report: DistReport) -> str:
    verdict = "OK" if report.exit_code == 0 else "PROBLEMS FOUND"
    lines = [f"devcheck dist: {verdict}", *_topology_lines(report.topology)]
    if report.launch is not None:
        lines += _launch_lines(report.launch)
    elif any(f.id == "dist_launch_skipped" for f in report.findings):
        lines.append("Launch: skipped (an error above)")
    else:
        lines.append("Launch: skipped (--preflight-only)")
    lines += ["", *_finding_lines(report.findings)]
    return "\n".join(lines)
