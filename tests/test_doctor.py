"""collect() / device_availability() / availability_from_facts(): the contract others use."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from fakes import fake_pynvml as fk
from fakes.facts import (
    host,
    nvml_gpus,
    nvml_missing,
    torch_cpu_machine,
    torch_cuda,
    torch_import_failed,
)

from devcheck import doctor
from devcheck.facts import HostFacts, LiveCheck, TorchFacts
from devcheck.probe import host as host_mod
from devcheck.probe import nvml, torchenv


def test_availability_no_driver_reason() -> None:
    a = doctor.availability_from_facts(nvml_missing(), torch_cpu_machine(), host())
    assert a.usable == ("cpu",)
    assert a.cuda_reason == "no NVIDIA driver (NVML library not found: libnvidia-ml.so.1)"
    assert a.mps_reason == "MPS is Apple-only (this is Linux)"
    assert a.torch_version == "2.14.1+cu130" and a.cuda_runtime == "13.0"
    assert a.findings == ()  # no GPU on the bus: a warning, not an error


def test_availability_two_gpus() -> None:
    a = doctor.availability_from_facts(nvml_gpus(2), torch_cuda(2), host())
    assert a.usable == ("cpu", "cuda:0", "cuda:1") and a.cuda_reason is None
    assert a.gpu_names == ("NVIDIA GeForce RTX 4090",) * 2


def test_availability_only_live_checked_devices_count() -> None:
    t = torch_cuda(2)
    t = TorchFacts(**{**t.__dict__, "live_checks": (
        LiveCheck("cpu", True), LiveCheck("cuda:0", False, error="no kernel image"),
        LiveCheck("cuda:1", True))})
    a = doctor.availability_from_facts(nvml_gpus(2), t, host())
    assert a.usable == ("cpu", "cuda:1")


def test_availability_all_live_checks_fail_gives_reason() -> None:
    a = doctor.availability_from_facts(nvml_gpus(1, compute_capability="6.1"),
                                       torch_cuda(1, ok=False, capability="6.1"), host())
    assert a.usable == ("cpu",) and "compute capability 6.1" in a.cuda_reason
    assert any(f.id == "gpu_arch_not_in_wheel" for f in a.findings)


@pytest.mark.parametrize("torch_facts, nvml_facts, text", [
    (torch_cpu_machine(cuda=None, version="2.5.0+cpu"), nvml_gpus(1),
     "this torch build is CPU-only (2.5.0+cpu)"),
    (torch_import_failed(), nvml_gpus(1), "import torch failed"),
    (torch_cpu_machine(reason="The NVIDIA driver on your system is too old"),
     nvml_gpus(1, cuda="12.4"), "driver is too old"),
    (torch_cpu_machine(reason=None), nvml_gpus(0),
     "the NVIDIA driver is loaded but reports no GPU"),
])
def test_availability_reasons(torch_facts: TorchFacts, nvml_facts, text: str) -> None:
    a = doctor.availability_from_facts(nvml_facts, torch_facts, host())
    assert a.usable == ("cpu",) and text in a.cuda_reason


def test_availability_without_live_checks_trusts_torch() -> None:
    a = doctor.availability_from_facts(nvml_gpus(1), torch_cuda(1, live_checks=()))
    assert a.usable == ("cpu", "cuda:0")


def test_device_availability_uses_patched_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "probe_nvml", lambda **kw: nvml_gpus(1))
    monkeypatch.setattr(torchenv, "probe_torch", lambda **kw: torch_cuda(1))
    monkeypatch.setattr(host_mod, "probe_host", lambda: host())
    a = doctor.device_availability()
    assert a.usable == ("cpu", "cuda:0")


def test_device_availability_real_machine() -> None:
    a = doctor.device_availability(live=True)
    assert a.usable[0] == "cpu"
    import torch

    if not torch.cuda.is_available():
        assert a.cuda_reason


def test_collect_with_fake_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.two_gpus())
    monkeypatch.setattr(torchenv, "probe_torch", lambda **kw: torch_cuda(2))
    facts = doctor.collect()
    assert len(facts.nvml.gpus) == 2 and facts.torch.device_count == 2
    assert facts.wheel.installed


def test_hung_probes_become_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(**kw: object) -> None:
        time.sleep(5)

    monkeypatch.setattr(nvml, "probe_nvml", hang)
    monkeypatch.setattr(torchenv, "probe_torch", hang)
    monkeypatch.setattr(host_mod, "probe_host", lambda: time.sleep(5) or HostFacts())
    start = time.monotonic()
    facts = doctor.collect(timeout_s=0.3)
    assert time.monotonic() - start < 3
    assert facts.nvml.error_kind == "timeout" and "timed out" in facts.nvml.error
    assert "timed out after" in facts.torch.error and not facts.torch.imported
    assert any("timed out" in e for e in facts.host.errors)


def test_crashing_probe_becomes_a_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(**kw: object) -> None:
        raise RuntimeError("probe bug")

    monkeypatch.setattr(torchenv, "probe_torch", crash)
    facts = doctor.collect()
    assert "probe bug" in facts.torch.error


def test_device_availability_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "collect", lambda **kw: 1 / 0)
    a = doctor.device_availability()
    assert a.usable == ("cpu",) and "ZeroDivisionError" in a.cuda_reason


def test_importing_doctor_does_not_import_torch() -> None:
    code = ("import sys, devcheck.doctor, devcheck.cli.doctor, devcheck.render.report; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
