"""devcheck dist without a launch: NVML topology through a fake binding, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devcheck.cli import cli
from devcheck.dist.model import TopologyFacts
from devcheck.dist.rules import preflight
from devcheck.probe import topology

# ---------------------------------------------------------------- topology through NVML


class _Pci:
    def __init__(self, bus: str) -> None:
        self.busId = bus.encode()  # noqa: N815 - the binding's spelling


class _NotSupported(Exception):
    pass


def fake_nvml(n: int, *, links: dict[tuple[int, int], int] | None = None,
              switch_links: int = 0, ancestor: int = 50, p2p: int = 0,
              nvlink_supported: bool = True, init_error: bool = False) -> types.ModuleType:
    """n GPUs; ``links`` direct NVLinks per pair; ``switch_links`` per GPU to NVSwitches."""
    links = links or {}
    bus = [f"00000000:{0x10 + i:02X}:00.0" for i in range(n)]
    peers: list[list[str]] = [[] for _ in range(n)]
    for (a, b), k in links.items():
        peers[a] += [bus[b]] * k
        peers[b] += [bus[a]] * k
    for i in range(n):
        peers[i] += ["00000000:F0:00.0"] * switch_links
    m = types.ModuleType("pynvml")

    def init() -> None:
        if init_error:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvlink_state(h: int, link: int) -> int:
        if not nvlink_supported:
            raise _NotSupported("Not Supported")
        if link >= len(peers[h]):
            raise _NotSupported("Not Supported")
        return 1

    m.__dict__.update(
        nvmlInit=init, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: n,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetPciInfo=lambda h: _Pci(bus[h]),
        nvmlDeviceGetNvLinkState=nvlink_state,
        nvmlDeviceGetNvLinkRemotePciInfo_v2=lambda h, link: _Pci(peers[h][link]),
        nvmlDeviceGetNvLinkVersion=lambda h, link: 4,
        nvmlDeviceGetMaxPcieLinkGeneration=lambda h: 5,
        nvmlDeviceGetMaxPcieLinkWidth=lambda h: 16,
        nvmlDeviceGetTopologyCommonAncestor=lambda a, b: ancestor,
        nvmlDeviceGetP2PStatus=lambda a, b, idx: p2p,
    )
    return m


def _probe(monkeypatch: pytest.MonkeyPatch, mod: types.ModuleType, **kw: Any) -> TopologyFacts:
    monkeypatch.setattr(topology, "_import_pynvml", lambda: mod)
    return topology.probe_topology(env=kw.pop("env", {}), with_nccl=False, **kw)


def test_topology_direct_nvlink(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _probe(monkeypatch, fake_nvml(2, links={(0, 1): 4}, ancestor=40))
    assert t.gpu_count == 2 and t.nvlink_version == 4
    (link,) = t.links
    assert (link.common_ancestor, link.p2p_read, link.nvlinks) == ("NODE", "ok", 4)
    assert link.expected_busbw_gbps == pytest.approx(100.0)


def test_topology_nvswitch_counts_fabric_links(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _probe(monkeypatch, fake_nvml(8, switch_links=18))
    assert len(t.links) == 28
    assert all(lk.nvlinks == 18 and lk.expected_busbw_gbps == 450.0 for lk in t.links)


def test_topology_pcie_cross_socket_without_p2p(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _probe(monkeypatch, fake_nvml(2, ancestor=50, p2p=1, nvlink_supported=False))
    (link,) = t.links
    assert link.nvlinks == 0 and link.p2p_read == "chipset not supported"
    assert link.common_ancestor == "SYSTEM"
    assert link.expected_busbw_gbps == pytest.approx(3.938 * 16 / 2)
    ids = [f.id for f in preflight(t, nproc=2, nnodes=1, backends=("gloo", "nccl"))]
    assert "dist_p2p_unavailable" in ids


def test_topology_without_nvml_is_a_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _probe(monkeypatch, fake_nvml(0, init_error=True))
    assert t.gpu_count == 0 and "Not Found" in (t.nvml_error or "")


def test_topology_nvml_hang_costs_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    mod = fake_nvml(2)
    mod.nvmlInit = lambda: gate.wait(30)  # type: ignore[attr-defined]
    t = _probe(monkeypatch, mod, timeout_s=0.2)
    gate.set()
    assert "timed out after 0.2 s" in (t.nvml_error or "")


def test_fake_root_reads_cmdline_and_iommu_groups(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cmdline").write_text("BOOT_IMAGE=/vmlinuz intel_iommu=on quiet\n")
    groups = tmp_path / "sys" / "kernel" / "iommu_groups"
    for i in range(3):
        (groups / str(i)).mkdir(parents=True)
    t = _probe(monkeypatch, fake_nvml(2, ancestor=20), root=tmp_path)
    assert t.iommu_groups == 3 and "intel_iommu=on" in (t.kernel_cmdline or "")
    assert t.shm_total_bytes is None  # no dev/shm under the fake root
    ids = [f.id for f in preflight(t, nproc=2, nnodes=1, backends=("gloo", "nccl"))]
    assert "dist_iommu_translation" in ids


def test_nccl_version_from_the_library_or_why_not(tmp_path: Path) -> None:
    version, why = topology.nccl_version(topology.find_libnccl([str(tmp_path)]))
    lib = topology.find_libnccl()
    if lib is None:
        assert version is None and "not found" in (why or "")
    else:
        assert version is not None and version.count(".") == 2 and why is None
    bogus = tmp_path / "nvidia" / "nccl" / "lib" / "libnccl.so.2"
    bogus.parent.mkdir(parents=True)
    bogus.write_text("not a library")
    assert topology.find_libnccl([str(tmp_path)]) == bogus
    version, why = topology.nccl_version(bogus)
    assert version is None and "cannot load" in (why or "")


# ---------------------------------------------------------------- CLI usage (no launch)


@pytest.mark.parametrize(("args", "words"), [
    (["--timeout", "nan"], "not a finite number"),
    (["--timeout", "0"], "outside [1, 3600]"),
    (["--min-busbw", "-1"], "outside (0, inf)"),
    (["--sizes", "4 parsecs"], "is not a size"),
    (["--nnodes", "2", "--node-rank", "2"], "is not below --nnodes 2"),
    (["--rdzv-endpoint", "host"], "has no port"),
    (["--rdzv-endpoint", "nohost:xx"], "the port 'xx' is not a number in 1..65535"),
    (["--rdzv-endpoint", "127.0.0.1:70000"], "the port '70000' is not a number in 1..65535"),
    (["--rdzv-endpoint", ":29400"], "has no host"),
    (["--backend", "mpi"], "'mpi' is not one of"),
    (["--nproc", "0"], "0 is not in the range"),
])
def test_usage_errors_exit_2(args: list[str], words: str) -> None:
    res = CliRunner().invoke(cli, ["dist", *args])
    assert res.exit_code == 2 and words in res.output, res.output
    assert "Traceback" not in res.output


def test_unresolvable_endpoint_is_an_error_and_nothing_is_launched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not resolve used to wait out --timeout and blame the other node."""
    from devcheck.cli import dist as cli_dist

    monkeypatch.setattr(topology, "_import_pynvml", lambda: fake_nvml(0, init_error=True))
    monkeypatch.setattr(cli_dist, "resolve_error",
                        lambda ep: "'nohost.invalid' does not resolve (Name or service not known)")
    monkeypatch.setattr(cli_dist, "launch", lambda opts: pytest.fail("launched"))
    res = CliRunner().invoke(cli, ["dist", "--nnodes", "2", "--rdzv-endpoint",
                                   "nohost.invalid:29400"])
    assert res.exit_code == 1, res.output
    assert "--rdzv-endpoint nohost.invalid:29400: 'nohost.invalid' does not resolve" in res.output
    assert "Launch: skipped (an error above)" in res.output
    assert "(dist_rdzv_unresolvable)" in res.output and "--preflight-only" not in res.output


def test_resolve_error_is_real_for_a_reserved_name() -> None:
    from devcheck.dist.endpoint import resolve_error

    assert resolve_error("localhost:29400") is None
    assert "does not resolve" in (resolve_error("no-such-host.invalid:29400") or "") or \
        "did not answer" in (resolve_error("no-such-host.invalid:29400") or "")


def test_preflight_only_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology, "_import_pynvml", lambda: fake_nvml(2, links={(0, 1): 2}))
    monkeypatch.setenv("NCCL_P2P_DISABLE", "1")
    res = CliRunner().invoke(cli, ["dist", "--preflight-only", "--json"])
    data = json.loads(res.output)
    assert data["launch"] is None and data["schema_version"] == 1
    assert data["options"]["nproc"] == 2 and data["options"]["backends"] == ["gloo", "nccl"]
    assert data["topology"]["links"][0]["nvlinks"] == 2
    assert "dist_nccl_p2p_disabled" in [f["id"] for f in data["findings"]]
    assert res.exit_code == data["exit_code"] == 0


def test_nccl_without_gpu_is_an_error_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology, "_import_pynvml", lambda: fake_nvml(0, init_error=True))
    res = CliRunner().invoke(cli, ["dist", "--backend", "nccl"])
    assert res.exit_code == 1
    assert "--backend nccl but NVML sees no NVIDIA GPU" in res.output
    assert "launch skipped" in res.output


def test_cli_module_does_not_import_torch() -> None:
    code = ("import sys, devcheck.cli.dist, devcheck.dist.launch, devcheck.probe.topology; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
