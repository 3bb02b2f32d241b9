"""The host probe: real values on this machine, isolated sub-probe failures, sysfs PCI scan."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from devcheck.probe import host


def test_real_host_facts_are_sane() -> None:
    facts = host.probe_host()
    assert facts.errors == ()
    assert facts.python_version and facts.os_name
    assert facts.cpu_logical and 1 <= facts.cpu_usable <= facts.cpu_logical
    assert 0 < facts.ram_available_bytes <= facts.ram_total_bytes
    if facts.os_name == "Linux":
        assert facts.shm_total_bytes is not None and facts.in_container is not None


def test_relevant_env_vars_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    env = host.probe_host().env
    assert env["CUDA_VISIBLE_DEVICES"] == "1,0"
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "UNRELATED_SECRET" not in env


def test_failing_subprobe_costs_one_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise PermissionError("no /proc")

    monkeypatch.setattr(psutil, "virtual_memory", boom)  # the non-Linux path
    monkeypatch.setattr(host, "_memory", boom)  # and the /proc one
    facts = host.probe_host()
    assert facts.ram_total_bytes is None and facts.cpu_logical is not None
    assert any("memory" in e and "no /proc" in e for e in facts.errors)


def _pci(root: Path, name: str, vendor: str, klass: str) -> None:
    d = root / name
    d.mkdir()
    (d / "vendor").write_text(vendor + "\n")
    (d / "class").write_text(klass + "\n")


def test_nvidia_pci_scan(tmp_path: Path) -> None:
    _pci(tmp_path, "0000:01:00.0", "0x10de", "0x030200")  # 3D controller (data-centre GPU)
    _pci(tmp_path, "0000:02:00.0", "0x10de", "0x030000")  # VGA (desktop GPU)
    _pci(tmp_path, "0000:03:00.0", "0x10de", "0x068000")  # NVSwitch bridge: not a GPU
    _pci(tmp_path, "0000:04:00.0", "0x8086", "0x030000")  # Intel iGPU
    assert host._nvidia_pci(tmp_path) == {"nvidia_pci_devices": 2}
    assert host._nvidia_pci(tmp_path / "absent") == {}


def test_cgroup_limit_caps_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "_cgroup_cpu_limit", lambda: 1.0)
    assert host.probe_host().cpu_usable == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Requires: [Linux /proc]")
def test_proc_readings_agree_with_psutil() -> None:
    facts = host.probe_host()
    assert facts.cpu_physical == psutil.cpu_count(logical=False)
    assert facts.cpu_logical == psutil.cpu_count(logical=True)
    assert facts.ram_total_bytes == psutil.virtual_memory().total
    assert abs(facts.ram_available_bytes - psutil.virtual_memory().available) < 512 * 1024**2


def test_non_linux_falls_back_to_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.sys, "platform", "darwin")
    assert host._cpus()["cpu_logical"] == psutil.cpu_count(logical=True)
    assert host._memory()["ram_total_bytes"] == psutil.virtual_memory().total
