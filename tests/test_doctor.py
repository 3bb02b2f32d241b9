"""collect() / run() / availability: the contract others use, and the public API."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from fakes import fake_pynvml as fk
from fakes.facts import (
    facts,
    host,
    nvml_gpus,
    nvml_missing,
    torch_cpu_machine,
    torch_cuda,
    torch_import_failed,
    use_torch,
)

import devcheck
from devcheck.facts import DoctorResult, HostFacts, LiveCheck, TorchFacts
from devcheck.probe import host as host_mod
from devcheck.probe import nvml, torchproc, wheel

doctor = importlib.import_module("devcheck.checkup")  # the module behind devcheck.doctor()


def availability(nvml_facts, torch_facts, host_facts=None):
    return doctor.availability_from_facts(
        facts(nvml=nvml_facts, torch=torch_facts, host_facts=host_facts or host()))


def test_availability_no_gpu_reason() -> None:
    a = availability(nvml_missing(), torch_cpu_machine())
    assert a.usable == ("cpu",)
    assert a.cuda_reason == "no NVIDIA GPU on this machine: torch uses the CPU"
    assert a.mps_reason == "MPS is Apple-only (this is Linux)"
    assert a.torch_version == "2.14.1+cu130" and a.cuda_version == "13.0"
    assert a.cuda_runtime == "13.0"  # the old name still answers
    assert a.findings == ()  # no GPU on the bus: a warning, not an error


def test_availability_two_gpus() -> None:
    a = availability(nvml_gpus(2), torch_cuda(2))
    assert a.usable == ("cpu", "cuda:0", "cuda:1") and a.cuda_reason is None
    assert a.gpu_names == ("NVIDIA GeForce RTX 4090",) * 2


def test_availability_only_live_checked_devices_count() -> None:
    t = torch_cuda(2)
    t = TorchFacts(**{**t.__dict__, "live_checks": (
        LiveCheck("cpu", True), LiveCheck("cuda:0", False, error="no kernel image"),
        LiveCheck("cuda:1", True))})
    assert availability(nvml_gpus(2), t).usable == ("cpu", "cuda:1")


def test_availability_all_live_checks_fail_gives_reason() -> None:
    a = availability(nvml_gpus(1, compute_capability="6.1"),
                     torch_cuda(1, ok=False, capability="6.1"))
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
    a = availability(nvml_facts, torch_facts)
    assert a.usable == ("cpu",) and text in a.cuda_reason


def test_availability_takes_the_wheel_from_the_facts_not_from_an_error_string() -> None:
    """torch absent (the wheel probe says so) vs installed but broken: two different reasons,
    whatever the import error's wording."""
    from fakes.facts import wheel as wheel_facts

    from devcheck.facts import DoctorFacts, WheelFacts

    odd = torch_import_failed("ModuleNotFoundError: No module named 'torch._C'")
    installed = DoctorFacts(host(), nvml_gpus(1), wheel_facts(), odd)
    absent = DoctorFacts(host(), nvml_gpus(1), WheelFacts(installed=False), odd)
    assert "import torch failed" in doctor.availability_from_facts(installed).cuda_reason
    assert doctor.availability_from_facts(absent).cuda_reason == "torch is not installed"


def test_availability_without_live_checks_trusts_torch() -> None:
    a = availability(nvml_gpus(1), torch_cuda(1, live_checks=()))
    assert a.usable == ("cpu", "cuda:0")


def test_run_diagnoses_once_and_adds_the_require_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "nvml_job", lambda pids=(): nvml.Job(
        "NVML query", lambda: nvml_gpus(1), nvml.nvml_timed_out))
    use_torch(monkeypatch, torch_cuda(1))
    monkeypatch.setattr(host_mod, "probe_host", lambda: host())
    calls: list[int] = []
    from devcheck.rules import diagnose as diagnose_mod

    real = diagnose_mod.diagnose
    monkeypatch.setattr(diagnose_mod, "diagnose", lambda f: calls.append(1) or real(f))
    result = doctor.run(require_kinds=("cuda",))
    assert isinstance(result, DoctorResult) and result.ok and calls == [1]
    assert result.availability.usable == ("cpu", "cuda:0")
    assert [f.id for f in result.findings if f.severity == "ok"][:1] == ["cuda_ok"]
    assert any(f.id == "require_cuda" and f.severity == "ok" for f in result.findings)


def test_collect_with_fake_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.two_gpus())
    use_torch(monkeypatch, torch_cuda(2))
    got = doctor.collect()
    assert len(got.nvml.gpus) == 2 and got.torch.device_count == 2
    assert got.wheel.installed


def test_hung_probes_become_facts_with_one_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    release = __import__("threading").Event()
    monkeypatch.setattr(nvml, "collect_nvml", lambda pids=(): release.wait(30))
    use_torch(monkeypatch, lambda: release.wait(30))
    monkeypatch.setattr(host_mod, "probe_host", lambda: release.wait(30) or HostFacts())
    try:
        got = doctor.collect(timeout_s=0.3)
    finally:
        release.set()
    assert got.nvml.error_kind == "timeout"
    assert got.nvml.error.startswith("NVML query timed out after 0.3s")
    assert got.torch.error == "torch probe timed out after 0.3s" and not got.torch.imported
    assert got.host.errors == ("host probe timed out after 0.3s",)


@pytest.mark.parametrize("exc", [RuntimeError("probe bug"), SystemExit(3), KeyboardInterrupt()])
def test_crashing_probe_becomes_a_fact(monkeypatch: pytest.MonkeyPatch,
                                       exc: BaseException) -> None:
    def crash() -> TorchFacts:
        raise exc

    use_torch(monkeypatch, crash)
    monkeypatch.setattr(wheel, "probe_wheel", crash)
    got = doctor.collect()
    name = type(exc).__name__
    assert got.torch.error.startswith(f"torch probe failed: {name}")
    assert got.wheel.error.startswith(f"wheel probe failed: {name}")


def test_device_availability_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "collect", lambda **kw: 1 / 0)
    a = doctor.device_availability()
    assert a.usable == ("cpu",) and "ZeroDivisionError" in a.cuda_reason


def test_device_availability_real_machine() -> None:
    a = doctor.device_availability(live=True)
    assert a.usable[0] == "cpu"
    import torch

    if not torch.cuda.is_available():
        assert a.cuda_reason


def test_in_process_probe_only_where_torch_is_loaded_and_not_live(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def job(*, live: bool, isolate: bool = True):
        seen.append(isolate)
        return torchproc.Job("torch probe", torch_cpu_machine, lambda why: TorchFacts())

    monkeypatch.setattr(torchproc, "torch_job", job)
    monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch", object()))
    doctor.collect(live=False)  # the trainer's call: torch is loaded, nothing to crash
    doctor.collect(live=True)
    doctor.collect(live=False, isolate=True)
    assert seen == [False, True, True]


# --- the public API ------------------------------------------------------------------------

def test_public_api_is_lazy_and_torch_free() -> None:
    code = ("import sys, devcheck\n"
            "assert callable(devcheck.doctor) and callable(devcheck.explain)\n"
            "m = devcheck.explain('RuntimeError: Found no NVIDIA driver on your system.')\n"
            "assert m and m[0].id == 'no_driver', m\n"
            "assert 'torch' not in sys.modules and 'pynvml' not in sys.modules\n"
            "import devcheck.checkup, devcheck.cli.doctor, devcheck.render.markdown\n"
            "assert callable(devcheck.doctor)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_public_doctor_returns_a_frozen_result() -> None:
    result = devcheck.doctor(live=False)
    assert isinstance(result, DoctorResult) and result.availability.usable[0] == "cpu"
    assert result.facts.torch is not None and result.facts.torch.imported
    with pytest.raises(AttributeError):
        result.findings = ()  # type: ignore[misc]
    assert isinstance(devcheck.doctor(live=False, require=("cuda",)), DoctorResult)


def test_step_guard_is_a_lazy_attribute() -> None:
    from devcheck.guard import StepGuard

    assert devcheck.StepGuard is StepGuard and "StepGuard" in dir(devcheck)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        devcheck.nope  # noqa: B018


def test_probe_calls_do_not_wait_on_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """One start for all probes: a slow host probe and a slow torch probe overlap."""
    gate = __import__("threading").Barrier(2, timeout=10)
    monkeypatch.setattr(host_mod, "probe_host", lambda: gate.wait() and HostFacts() or host())
    use_torch(monkeypatch, lambda: gate.wait() and torch_cpu_machine() or torch_cpu_machine())
    got = doctor.collect(timeout_s=20)
    # Had they run one after the other, the barrier would have broken: both would be failures.
    assert got.torch.imported and got.host.errors == ()


def test_public_doctor_rejects_an_unknown_require_kind() -> None:
    with pytest.raises(ValueError, match="'tpu' is not a device kind; expected one of cuda, mps"):
        devcheck.doctor(require=("tpu",))
