"""``devcheck dist``: preflight, then launch the ranks through torchrun, then judge.

Thin: parse, probe (devcheck.probe.topology), launch (devcheck.dist.launch), diagnose
(devcheck.dist.rules), render (devcheck.dist.render). Never imports torch itself: the
ranks do, inside torchrun. Exit codes: 0 all stages passed and no error finding, 1 error
findings or a failed/hung launch, 2 usage errors, 130 interrupted (everything killed).
"""

from __future__ import annotations

import signal
import sys

import click

from devcheck.cli.params import FiniteFloat
from devcheck.dist import render
from devcheck.dist.bandwidth import DEFAULT_SIZES, human_size, parse_sizes
from devcheck.dist.endpoint import endpoint_problem, resolve_error
from devcheck.dist.launch import LaunchOptions, launch
from devcheck.dist.model import DistReport, TopologyFacts
from devcheck.dist.rules import launch_findings, preflight
from devcheck.facts import Finding
from devcheck.probe.topology import probe_topology

_DEFAULT_SIZES = ",".join(human_size(s) for s in DEFAULT_SIZES)


def _sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        return parse_sizes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _backends(choice: str, t: TopologyFacts) -> tuple[tuple[str, ...], list[Finding]]:
    """gloo always (it proves rendezvous and the network), then NCCL where it can run."""
    if choice == "gloo" or (choice == "auto" and t.gpu_count == 0):
        return ("gloo",), []
    if t.gpu_count == 0:
        return ("gloo",), [Finding(
            "dist_nccl_unavailable", "error", "--backend nccl but NVML sees no NVIDIA GPU",
            t.nvml_error or "NVML lists no GPU",
            "run on a machine with NVIDIA GPUs and a driver (devcheck doctor says why not), "
            "or use --backend gloo")]
    return ("gloo", "nccl"), []


@click.command("dist")
@click.option("--nproc", type=click.IntRange(1, 512), default=None,
              help="Ranks on this node [default: GPUs for NCCL, else 2].")
@click.option("--backend", type=click.Choice(["auto", "gloo", "nccl"]), default="auto",
              show_default=True, help="gloo always runs first; auto adds NCCL with GPUs.")
@click.option("--timeout", "timeout_s", type=FiniteFloat(1, 3600), default=60.0,
              show_default=True, help="Seconds for the whole launch before ranks are killed.")
@click.option("--sizes", callback=_sizes, default=_DEFAULT_SIZES, show_default=True,
              help="Comma-separated message sizes for the bandwidth sweep.")
@click.option("--min-busbw", type=FiniteFloat(0, low_open=True), default=None,
              help="Fail (exit 1) when all_reduce busbw at the largest size is below this "
                   "(GB/s), like NCCL_TESTS_MIN_BW.")
@click.option("--nnodes", type=click.IntRange(1, 4096), default=1, show_default=True,
              help="torchrun --nnodes: nodes taking part (start this on each).")
@click.option("--node-rank", type=click.IntRange(0), default=0, show_default=True,
              help="torchrun --node-rank of this node.")
@click.option("--rdzv-endpoint", default=None,
              help="torchrun --rdzv-endpoint HOST:PORT [default with --nnodes > 1: "
                   "127.0.0.1:29400].")
@click.option("--rdzv-id", default="devcheck-dist", show_default=True,
              help="torchrun --rdzv-id: the same on every node.")
@click.option("--preflight-only", is_flag=True, help="Only the checks that launch nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (docs/dist.md).")
def dist(nproc: int | None, backend: str, timeout_s: float, sizes: tuple[int, ...],
         min_busbw: float | None, nnodes: int, node_rank: int, rdzv_endpoint: str | None,
         rdzv_id: str, preflight_only: bool, as_json: bool) -> None:
    """Does torch.distributed work here, how fast, and if it hangs, where?"""
    if node_rank >= nnodes:
        raise click.BadParameter(f"{node_rank} is not below --nnodes {nnodes} (node ranks "
                                 f"are 0..{nnodes - 1})", param_hint="--node-rank")
    if rdzv_endpoint is not None:
        problem = endpoint_problem(rdzv_endpoint)
        if problem:
            raise click.BadParameter(problem, param_hint="--rdzv-endpoint")
    topo = probe_topology()
    backends, findings = _backends(backend, topo)
    if nproc is None:
        nproc = max(1, topo.gpu_count) if "nccl" in backends else 2
    unresolved = resolve_error(rdzv_endpoint) if rdzv_endpoint is not None else None
    findings += preflight(topo, nproc=nproc, nnodes=nnodes, backends=backends,
                          endpoint=rdzv_endpoint, endpoint_error=unresolved)
    result = None
    blocked = any(f.severity == "error" for f in findings)
    if not preflight_only and not blocked:
        opts = LaunchOptions(nproc=nproc, backends=backends, timeout_s=timeout_s, sizes=sizes,
                             nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                             rdzv_id=rdzv_id)
        try:
            result = launch(opts)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (stopsignals.Stopped)
            signum = int(getattr(exc, "signum", signal.SIGINT))
            click.echo(f"devcheck dist: interrupted ({signal.Signals(signum).name}); the "
                       "launcher and its ranks were killed", err=True)
            sys.exit(128 + signum)
        findings += launch_findings(result, topo, min_busbw=min_busbw)
    elif blocked and not preflight_only:
        first = next(f for f in findings if f.severity == "error")
        findings.append(Finding("dist_launch_skipped", "info", "launch skipped",
                                f"the error above ({first.id}) makes the launch pointless",
                                "fix that error (its fix is above), then rerun"))
    failed = any(f.severity == "error" for f in findings) or (
        result is not None and (result.hang is not None or result.timed_out))
    report = DistReport(topology=topo, launch=result, findings=tuple(findings),
                        exit_code=1 if failed else 0)
    options = {"nproc": nproc, "backend": backend, "backends": list(backends),
               "timeout_s": timeout_s, "sizes": list(sizes), "min_busbw": min_busbw,
               "nnodes": nnodes, "node_rank": node_rank, "rdzv_endpoint": rdzv_endpoint,
               "rdzv_id": rdzv_id, "preflight_only": preflight_only}
    text = render.to_json(report, options) if as_json else render.to_text(report)
    try:
        click.echo(text)
    except OSError as exc:
        raise click.ClickException(f"could not write the report to stdout: "
                                   f"{exc.strerror or exc}") from None
    sys.exit(report.exit_code)
