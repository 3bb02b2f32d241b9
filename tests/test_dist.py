"""devcheck dist, the pure parts: nccl-tests formulas, rules, hang diagnosis, the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devcheck.dist import bandwidth as bw
from devcheck.dist.hang import diagnose_hang, rank_states
from devcheck.dist.launch import LaunchOptions, build_command
from devcheck.dist.model import (
    BandwidthPoint,
    CollectiveCheck,
    GpuLink,
    LaunchResult,
    TopologyFacts,
)
from devcheck.dist.rules import launch_findings, preflight

# ---------------------------------------------------------------- nccl-tests' arithmetic


@pytest.mark.parametrize(("op", "n", "factor"), [
    ("all_reduce", 2, 1.0), ("all_reduce", 8, 1.75), ("all_reduce", 1, 0.0),
    ("all_gather", 2, 0.5), ("all_gather", 8, 0.875), ("broadcast", 8, 1.0),
])
def test_bus_factor_is_nccl_tests(op: str, n: int, factor: float) -> None:
    assert bw.bus_factor(op, n) == pytest.approx(factor)


def test_busbw_from_time() -> None:
    # 1 GB in 10 ms on 8 ranks: algbw 100 GB/s, all_reduce busbw 175 GB/s
    assert bw.algbw_gbps(10**9, 0.01) == pytest.approx(100.0)
    assert bw.busbw_gbps("all_reduce", 10**9, 0.01, 8) == pytest.approx(175.0)
    assert bw.algbw_gbps(10**9, 0.0) == 0.0
    with pytest.raises(ValueError, match="unknown collective 'scatter'"):
        bw.bus_factor("scatter", 2)


@pytest.mark.parametrize(("text", "value"), [
    ("4096", 4096), ("4KiB", 4096), ("64k", 65536), ("32MiB", 32 * 1024**2), ("1G", 1024**3),
    ("1.5M", 1572864), ("10", 8),
])
def test_parse_size(text: str, value: int) -> None:
    assert bw.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "4 parsecs", "-5", "0", "8GiB", "nan"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        bw.parse_size(text)


def test_parse_sizes_sorts_and_dedups() -> None:
    assert bw.parse_sizes("1M,4KiB,1MiB") == (4096, 1024**2)
    with pytest.raises(ValueError, match="lists no size"):
        bw.parse_sizes(" , ")


def test_expected_link() -> None:
    assert bw.expected_link_gbps("NODE", 18, 4, 5, 16) == pytest.approx(450.0)  # H100 SXM
    assert bw.expected_link_gbps("HOSTBRIDGE", 0, None, 4, 16) == pytest.approx(31.5, 0.01)
    assert bw.expected_link_gbps("SYSTEM", 0, None, 4, 16) == pytest.approx(15.75, 0.01)
    assert bw.expected_link_gbps("SYSTEM", 0, None, None, None) is None


# ---------------------------------------------------------------- preflight rules


def _topo(**kw: Any) -> TopologyFacts:
    base: dict[str, Any] = {"gpu_count": 2, "gpu_names": ("H100",), "nccl_version": "2.21.5",
                            "shm_total_bytes": 64 * 1024**2, "net_interfaces": ("eth0", "lo")}
    return TopologyFacts(**{**base, **kw})


def _ids(t: TopologyFacts, nproc: int = 2, nnodes: int = 1,
         backends: tuple[str, ...] = ("gloo", "nccl")) -> dict[str, str]:
    return {f.id: f.severity for f in preflight(t, nproc=nproc, nnodes=nnodes,
                                                backends=backends)}


def test_small_shm_and_nccl_version() -> None:
    ids = _ids(_topo())
    assert ids["dist_shm_small"] == "warn" and ids["dist_nccl_version"] == "ok"
    assert "dist_shm_small" not in _ids(_topo(shm_total_bytes=1024**3))


def test_suspicious_variables() -> None:
    t = _topo(env={"NCCL_P2P_DISABLE": "1", "NCCL_SOCKET_IFNAME": "ib9",
                   "GLOO_SOCKET_IFNAME": "eth0", "NCCL_DEBUG": "INFO",
                   "MASTER_ADDR": "127.0.0.1", "CUDA_VISIBLE_DEVICES": "3"})
    ids = _ids(t, nnodes=2)
    assert ids["dist_nccl_p2p_disabled"] == "warn"
    assert ids["dist_nccl_socket_ifname_unknown"] == "error"
    assert "dist_gloo_socket_ifname_unknown" not in ids
    assert ids["dist_nccl_debug_set"] == "info"
    assert ids["dist_master_addr"] == "error"  # loopback with 2 nodes
    assert ids["dist_cuda_visible_devices"] == "error"  # 2 ranks, 1 visible GPU
    assert _ids(t, nnodes=1)["dist_master_addr"] == "info"


@pytest.mark.parametrize(("spec", "ok"), [
    ("eth", True), ("=eth0", True), ("=eth", False), ("^lo", True), ("^eth,lo", False),
    ("ib0,eth0", True), ("docker", False),
])
def test_nccl_socket_ifname_syntax(spec: str, ok: bool) -> None:
    ids = _ids(_topo(env={"NCCL_SOCKET_IFNAME": spec}))
    assert ("dist_nccl_socket_ifname_unknown" not in ids) == ok


def test_loopback_endpoint_with_several_nodes() -> None:
    t = _topo()
    f = {x.id: x for x in preflight(t, nproc=1, nnodes=2, backends=("gloo",))}
    assert f["dist_rdzv_loopback"].severity == "warn" and "the default" in f[
        "dist_rdzv_loopback"].title
    far = preflight(t, nproc=1, nnodes=2, backends=("gloo",), endpoint="10.0.0.1:29400")
    assert "dist_rdzv_loopback" not in [x.id for x in far]
    assert "dist_rdzv_loopback" not in [x.id for x in preflight(t, nproc=1, nnodes=1,
                                                                backends=("gloo",))]


def test_cuda_visible_devices_maps_ranks() -> None:
    t = _topo(env={"CUDA_VISIBLE_DEVICES": "2,3"})
    (f,) = [f for f in preflight(t, nproc=2, nnodes=1, backends=("gloo", "nccl"))
            if f.id == "dist_cuda_visible_devices"]
    assert f.severity == "info" and "rank 1 -> cuda:1 = GPU 3" in f.evidence


def test_more_ranks_than_cpus_is_said() -> None:
    assert _ids(_topo(cpu_usable=2), nproc=4)["dist_cpu_oversubscribed"] == "info"
    assert "dist_cpu_oversubscribed" not in _ids(_topo(cpu_usable=2), nproc=2)


def test_more_ranks_than_gpus_and_no_gpu() -> None:
    assert _ids(_topo(), nproc=4)["dist_nproc_exceeds_gpus"] == "error"
    assert _ids(_topo(gpu_count=0), backends=("gloo",))["dist_no_gpu"] == "info"


def test_cross_socket_pair_warns_with_expected_bandwidth() -> None:
    link = GpuLink(0, 1, "SYSTEM", "ok", 0, 15.75)
    fs = [f for f in preflight(_topo(links=(link,)), nproc=2, nnodes=1,
                               backends=("gloo", "nccl")) if f.id == "dist_topology_cross_socket"]
    assert fs and "16 GB/s" in fs[0].evidence


# ---------------------------------------------------------------- launch rules


def _launch(**kw: Any) -> LaunchResult:
    base: dict[str, Any] = {"command": ("python",), "world_size": 2, "local_ranks": 2,
                            "backends": ("gloo",), "exit_code": 0, "timed_out": False,
                            "duration_s": 3.0, "stages_passed": ("rendezvous", "gloo")}
    return LaunchResult(**{**base, **kw})


def test_wrong_elements_are_an_error() -> None:
    r = _launch(checks=(CollectiveCheck("gloo", "all_reduce", 100, 3, False),))
    fs = {f.id: f for f in launch_findings(r, _topo())}
    assert fs["dist_collective_wrong"].severity == "error"
    assert "3 wrong element(s) of 100" in fs["dist_collective_wrong"].title


def test_min_busbw_gate_and_link_comparison() -> None:
    pts = (BandwidthPoint("nccl", "all_reduce", 4096, 10.0, 0.4, 0.4),
           BandwidthPoint("nccl", "all_reduce", 64 * 1024**2, 1000.0, 67.1, 67.1))
    r = _launch(backends=("gloo", "nccl"), stages_passed=("rendezvous", "gloo", "nccl"),
                bandwidth=pts)
    t = _topo(links=(GpuLink(0, 1, "NODE", "ok", 18, 450.0),))
    fs = {f.id: f for f in launch_findings(r, t, min_busbw=100.0)}
    assert fs["dist_min_busbw"].severity == "error" and "64MiB" in fs["dist_min_busbw"].evidence
    assert fs["dist_busbw_below_link"].severity == "warn"
    ok = {f.id: f.severity for f in launch_findings(r, t, min_busbw=50.0)}
    assert ok["dist_min_busbw"] == "ok"
    one = _launch(world_size=1, bandwidth=pts[:1], backends=("gloo", "nccl"),
                  stages_passed=("rendezvous", "gloo", "nccl"))
    alone = {f.id: f for f in launch_findings(one, t, min_busbw=50.0)}
    assert alone["dist_min_busbw"].severity == "info" and "one rank" in alone[
        "dist_min_busbw"].title


# ---------------------------------------------------------------- hang diagnosis


def _write_progress(d: Path, rank: int, steps: list[dict[str, Any]]) -> None:
    with open(d / f"rank{rank}.progress.jsonl", "w") as f:
        for s in steps:
            f.write(json.dumps(s) + "\n")


def _common(stage: str = "gloo") -> list[dict[str, Any]]:
    return [{"event": "start", "stage": "launch", "pid": 1, "host": "h"},
            {"event": "enter", "stage": "rendezvous", "op": "init_process_group", "seq": 1},
            {"event": "exit", "stage": "rendezvous", "op": "init_process_group", "seq": 1},
            {"event": "passed", "stage": "rendezvous"},
            {"event": "stage", "stage": stage}]


def test_hang_names_the_rank_that_never_arrived(tmp_path: Path) -> None:
    ar = [{"event": "enter", "stage": "gloo", "op": "all_reduce", "seq": i} for i in (1, 2, 3)]
    ex = [{"event": "exit", "stage": "gloo", "op": "all_reduce", "seq": i} for i in (1, 2)]
    ahead = _common() + [ar[0], ex[0], ar[1], ex[1], ar[2]]
    _write_progress(tmp_path, 0, ahead)
    _write_progress(tmp_path, 1, ahead[:-1])  # rank 1 never reached all_reduce #3
    (tmp_path / "rank1.progress.jsonl").open("a").write('{"event": "ent')  # cut by a kill
    states = rank_states(tmp_path, 2)
    h = diagnose_hang(states, 2, LaunchOptions(nproc=2))
    assert h.missing_ranks == (1,) and h.stage == "gloo"
    assert "rank 1 never reached all_reduce #3" in h.summary
    assert h.last_collective == "all_reduce #3"


def test_all_ranks_stuck_inside_nccl_blames_the_transport(tmp_path: Path) -> None:
    steps = _common("nccl") + [{"event": "enter", "stage": "nccl", "op": "all_reduce",
                                "seq": 1}]
    for r in (0, 1):
        _write_progress(tmp_path, r, steps)
    h = diagnose_hang(rank_states(tmp_path, 2), 2, LaunchOptions(nproc=2))
    assert h.stage == "nccl" and h.missing_ranks == ()
    assert "nccl transport" in h.summary
    assert any("NCCL_DEBUG=INFO" in s for s in h.next_steps)
    assert any("TORCH_NCCL_DUMP_ON_TIMEOUT" in s for s in h.next_steps)


def test_rendezvous_without_the_other_node(tmp_path: Path) -> None:
    opts = LaunchOptions(nproc=2, nnodes=3, node_rank=0, rdzv_endpoint="10.0.0.1:29400",
                         timeout_s=30)
    h = diagnose_hang(rank_states(tmp_path, 6), 6, opts)
    assert h.stage == "rendezvous" and h.missing_ranks == (0, 1, 2, 3, 4, 5)
    assert "node rank 1, 2 never arrived" in h.summary and "10.0.0.1:29400" in h.summary


def test_a_launcher_that_died_at_once_is_not_called_a_timeout(tmp_path: Path) -> None:
    """torchrun refusing its arguments used to read "node rank 1 never arrived"."""
    opts = LaunchOptions(nproc=2, nnodes=2, node_rank=0, rdzv_endpoint="h:29400", timeout_s=30)
    output = ("Traceback (most recent call last):\n  ...\nValueError: The port number of the "
              "rendezvous endpoint 'h:99999' must be an integer between 0 and 65536.\n")
    cmd = ["python", "-m", "torch.distributed.run", "--nnodes", "2", "-m", "w"]
    h = diagnose_hang(rank_states(tmp_path, 4), 4, opts, timed_out=False, exit_code=1,
                      command=cmd, launcher_output=output)
    assert h.stage == "launch" and "never arrived" not in h.summary
    assert "torchrun exited with code 1 before launching any (not a timeout)" in h.summary
    assert "ValueError: The port number" in h.summary
    assert any(step.endswith("python -m torch.distributed.run --nnodes 2 -m w")
               for step in h.next_steps)
    # c10d's own join timeout is a timeout, even though the launcher exited by itself
    late = diagnose_hang(rank_states(tmp_path, 4), 4, opts, timed_out=False, exit_code=1,
                         launcher_output="torch.distributed.elastic.rendezvous.api."
                                         "RendezvousTimeoutError\n")
    assert late.stage == "rendezvous" and "node rank 1 never arrived" in late.summary


def test_a_rank_error_names_rank_and_stage(tmp_path: Path) -> None:
    _write_progress(tmp_path, 0, _common("nccl"))
    _write_progress(tmp_path, 1, _common("nccl") + [
        {"event": "error", "stage": "nccl", "error": "DistBackendError: NCCL error"}])
    h = diagnose_hang(rank_states(tmp_path, 2), 2, LaunchOptions(nproc=2))
    assert h.stage == "nccl" and h.missing_ranks == (1,)
    assert "rank 1 failed in the nccl stage" in h.summary


def test_build_command_uses_torchrun() -> None:
    cmd = build_command(LaunchOptions(nproc=2), Path("/tmp/x"))
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in cmd
    multi = build_command(LaunchOptions(nproc=1, nnodes=2, node_rank=1,
                                        rdzv_endpoint="h:1234", rdzv_id="j", timeout_s=30),
                          Path("/tmp/x"))
    joined = " ".join(multi)
    assert "--nnodes 2 --node-rank 1 --rdzv-backend c10d --rdzv-endpoint h:1234" in joined
    assert "--rdzv-id j" in joined and "join_timeout=26" in joined


def test_stage_failures_tell_network_from_nccl() -> None:
    from devcheck.dist.model import HangReport

    nccl = _launch(backends=("gloo", "nccl"), timed_out=True, exit_code=None, timeout_s=30.0,
                   launcher_output="SignalException: got signal: 15",
                   hang=HangReport("nccl", (), "every rank entered all_reduce #1 (stage nccl) "
                                   "and none left", "all_reduce #1", ("NCCL_DEBUG=INFO",)))
    (f,) = [x for x in launch_findings(nccl, _topo()) if x.severity == "error"]
    assert f.id == "dist_nccl_failed" and "--timeout 30 s" in f.title
    assert "gloo passed; NCCL transport broken" in f.title
    assert "signal" not in f.evidence and f.fix == "1. NCCL_DEBUG=INFO"
    rdzv = _launch(stages_passed=(), exit_code=1, launcher_output="RendezvousTimeoutError",
                   hang=HangReport("rendezvous", (2, 3), "node rank 1 never arrived"))
    (g,) = [x for x in launch_findings(rdzv, _topo()) if x.severity == "error"]
    assert g.id == "dist_rendezvous_failed" and "network/rendezvous broken" in g.title
    assert g.pitfall == "dist_rendezvous_timeout" and "RendezvousTimeoutError" in g.evidence
