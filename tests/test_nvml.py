"""The NVML probe against scenario fakes of pynvml: every failure is a fact, never a raise."""

from __future__ import annotations

import os

import pytest
from fakes import fake_pynvml as fk

from devcheck.probe import nvml


def test_two_gpus_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.two_gpus())
    facts = nvml.probe_nvml()
    assert facts.available and facts.error is None
    assert facts.driver_version == "580.65.06" and facts.cuda_driver_version == "13.0"
    assert [g.index for g in facts.gpus] == [0, 1]
    g0, g1 = facts.gpus
    assert g0.name == "NVIDIA H100 80GB HBM3" and g0.uuid == "GPU-aaaa"
    assert g0.compute_capability == "9.0"
    assert g0.memory_total_bytes == 81559 * fk.MiB
    assert g0.memory_free_bytes == g0.memory_total_bytes - g0.memory_used_bytes
    assert g0.power_draw_w == 35.0 and g0.power_limit_w == 700.0  # milliwatts -> watts
    assert g0.temperature_c == 41 and g0.utilization_gpu_pct == 3
    assert g1.utilization_gpu_pct == 100
    assert [(p.pid, p.used_memory_bytes) for p in g1.processes] == [
        (4242, 79000 * fk.MiB), (4243, None)]  # usedGpuMemory None stays None
    assert g1.processes[0].name == "python4242"  # bytes decoded


def test_zero_and_one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.no_gpus())
    assert nvml.probe_nvml().gpus == ()
    fk.install(monkeypatch, fk.one_gpu(cc=(12, 0)))
    (g,) = nvml.probe_nvml().gpus
    assert g.compute_capability == "12.0" and g.error is None


@pytest.mark.parametrize("scenario, kind", [
    (fk.library_missing, "library_not_found"),
    (fk.driver_not_loaded, "driver_not_loaded"),
    (lambda: fk.Scenario(init_error="NVMLError_NoPermission"), "no_permission"),
    (lambda: fk.Scenario(init_error="NVMLError_LibRmVersionMismatch"), "driver_mismatch"),
    (lambda: fk.Scenario(init_error="NVMLError_Unknown"), "unknown"),
])
def test_init_failures_are_facts(monkeypatch: pytest.MonkeyPatch, scenario, kind: str) -> None:
    fk.install(monkeypatch, scenario())
    facts = nvml.probe_nvml()
    assert not facts.available and facts.error_kind == kind
    assert facts.error and facts.gpus == ()


def test_library_missing_names_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.library_missing())
    facts = nvml.probe_nvml()
    assert "NVMLError_LibraryNotFound" in facts.error
    assert "libnvidia-ml.so.1" in facts.error or "nvml.dll" in facts.error


def test_bindings_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.uninstallable(monkeypatch)
    facts = nvml.probe_nvml()
    assert facts.error_kind == "bindings_missing" and "nvidia-ml-py" in facts.error


def test_not_supported_fields_are_none_with_their_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.not_supported_fields())
    facts = nvml.probe_nvml()
    (g,) = facts.gpus
    assert g.error is None and g.name == "NVIDIA GeForce RTX 4090"
    assert g.power_draw_w is None and g.power_limit_w is None
    assert g.temperature_c is None and g.utilization_gpu_pct is None
    assert g.processes == () and g.memory_total_bytes is not None
    assert g.errors == {"power_draw_w": "NotSupported", "power_limit_w": "NotSupported",
                        "temperature_c": "NotSupported", "utilization": "NotSupported",
                        "compute_processes": "NotSupported"}


@pytest.mark.parametrize("error", ["NVMLError_Uninitialized", "NVMLError_NoPermission",
                                   "NVMLError_Timeout", "NVMLError_InvalidArgument"])
def test_other_nvml_field_errors_cost_the_field_not_the_gpu(
        monkeypatch: pytest.MonkeyPatch, error: str) -> None:
    sc = fk.Scenario(gpus=[fk.FakeGpu(failing={"nvmlDeviceGetMemoryInfo": error,
                                               "nvmlDeviceGetName": error})])
    fk.install(monkeypatch, sc)
    (g,) = nvml.probe_nvml().gpus
    assert g.error is None and g.uuid and g.compute_capability == "8.9"
    assert g.memory_total_bytes is None and g.name is None
    reason = error.removeprefix("NVMLError_")
    assert g.errors == {"memory": reason, "name": reason}


def test_devcheck_bug_in_a_field_is_not_hidden_as_unsupported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fk.build_module(fk.one_gpu())
    mod.nvmlDeviceGetTemperature = lambda handle, sensor: handle.no_such_attribute
    monkeypatch.setitem(__import__("sys").modules, "pynvml", mod)
    facts = nvml.probe_nvml()
    assert not facts.available and facts.error_kind == "unknown"
    assert "AttributeError" in facts.error and "no_such_attribute" in facts.error


def test_a_function_missing_from_an_old_binding_is_a_field_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fk.build_module(fk.one_gpu())
    del mod.nvmlDeviceGetEnforcedPowerLimit
    monkeypatch.setitem(__import__("sys").modules, "pynvml", mod)
    (g,) = nvml.probe_nvml().gpus
    assert g.power_limit_w is None and g.power_draw_w == 35.0
    assert g.errors == {"power_limit_w": "nvmlDeviceGetEnforcedPowerLimit is not in this pynvml"}


def test_one_malformed_process_record_costs_that_record_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sc = fk.one_gpu(processes=[fk.FakeProcess(11, 3 * fk.MiB), fk.MalformedProcess(),
                               fk.FakeProcess(12, None)])
    fk.install(monkeypatch, sc)
    facts = nvml.probe_nvml()
    (g,) = facts.gpus
    assert facts.error is None and g.error is None and g.name
    assert [p.pid for p in g.processes] == [11, 12]
    assert g.errors == {"processes": "1 process record(s) could not be read"}


def test_names_are_stored_printable(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = fk.one_gpu(name="RTX\x1b[2J\x1b]0;owned\x07", processes=[fk.FakeProcess(77, None)])
    mod = fk.build_module(sc)
    mod.nvmlSystemGetProcessName = lambda pid: b"py\x1b[31mthon\x9b"
    monkeypatch.setitem(__import__("sys").modules, "pynvml", mod)
    (g,) = nvml.probe_nvml().gpus
    assert g.name == "RTX\\x1b[2J\\x1b]0;owned\\x07"
    assert g.processes[0].name == "py\\x1b[31mthon\ufffd"  # invalid UTF-8 byte replaced


@pytest.mark.parametrize("statement, name", [("raise SystemExit(3)", "SystemExit: 3"),
                                             ("raise KeyboardInterrupt", "KeyboardInterrupt"),
                                             ("raise OSError('libc mismatch')", "OSError")])
def test_a_binding_that_kills_its_import_is_reported_as_such(
        monkeypatch: pytest.MonkeyPatch, tmp_path, statement: str, name: str) -> None:
    fk.broken_on_import(monkeypatch, tmp_path, statement)
    for facts in (nvml.probe_nvml(), nvml.probe_nvml(timeout_s=10)):
        assert facts.error_kind == "bindings_missing" and name in facts.error
        assert "timed out" not in facts.error


@pytest.mark.parametrize("error", ["NVMLError_GpuIsLost", "NVMLError_Unknown"])
def test_lost_gpu_is_listed_with_its_error(monkeypatch: pytest.MonkeyPatch, error: str) -> None:
    fk.install(monkeypatch, fk.lost_gpu(error))
    facts = nvml.probe_nvml()
    good, lost = facts.gpus
    assert good.error is None and good.uuid == "GPU-good"
    assert lost.error and error in lost.error and lost.name is None
    assert facts.available


def test_lost_gpu_midway_through_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = fk.Scenario(gpus=[fk.FakeGpu(failing={"nvmlDeviceGetMemoryInfo": "NVMLError_GpuIsLost"})])
    fk.install(monkeypatch, sc)
    (g,) = nvml.probe_nvml().gpus
    assert g.error and "GpuIsLost" in g.error and g.memory_total_bytes is None


def test_old_driver_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.old_driver())
    facts = nvml.probe_nvml()
    assert facts.driver_version == "550.54.15"  # bytes from old bindings decoded
    assert facts.cuda_driver_version == "12.4"


@pytest.mark.parametrize("value, text", [(13000, "13.0"), (12080, "12.8"), (12040, "12.4"),
                                         (11080, "11.8"), (0, None), (None, None)])
def test_format_cuda_version(value: int | None, text: str | None) -> None:
    assert nvml.format_cuda_version(value) == text


def test_own_process_is_not_a_rival(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.one_gpu(processes=[fk.FakeProcess(os.getpid(), 500 * fk.MiB),
                                                  fk.FakeProcess(1, 10 * fk.MiB)]))
    (g,) = nvml.probe_nvml().gpus
    assert [p.pid for p in g.processes] == [1]


def test_shutdown_called_and_count_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = fk.install(monkeypatch, fk.one_gpu())
    nvml.probe_nvml()
    assert sc.calls[0] == "nvmlInit" and sc.calls[-1] == "nvmlShutdown"
    mod = fk.build_module(fk.one_gpu())

    def broken() -> int:
        raise fk.ERRORS["NVMLError_Unknown"]()

    mod.nvmlDeviceGetCount = broken
    monkeypatch.setitem(__import__("sys").modules, "pynvml", mod)
    facts = nvml.probe_nvml()
    assert facts.available and "could not count GPUs" in facts.error
    assert facts.driver_version == "580.65.06"


def test_unexpected_binding_bug_is_a_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fk.build_module(fk.one_gpu())
    mod.nvmlInit = lambda: (_ for _ in ()).throw(RuntimeError("ctypes exploded"))
    monkeypatch.setitem(__import__("sys").modules, "pynvml", mod)
    facts = nvml.probe_nvml()
    assert not facts.available and "ctypes exploded" in facts.error


def test_hung_driver_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.hung_driver(seconds=3))
    facts = nvml.probe_nvml(timeout_s=0.2)
    assert facts.error_kind == "timeout"
    assert facts.error == "NVML query timed out after 0.2s (a hung driver call?)"


def test_real_machine_probe_never_raises() -> None:
    facts = nvml.probe_nvml()
    assert facts.available or facts.error  # this CPU machine: library_not_found


def test_unknown_error_from_every_call_after_init_names_the_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit's env.nvml.unknown: nvmlInit works, every later call raises Unknown."""
    mod = fk.build_module(fk.two_gpus())

    def unknown(*args: object) -> None:
        raise fk.ERRORS["NVMLError_Unknown"]()

    for name in dir(mod):
        if name.startswith("nvml") and name not in ("nvmlInit", "nvmlShutdown"):
            setattr(mod, name, unknown)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", mod)
    facts = nvml.probe_nvml()
    assert facts.available and facts.gpus == () and facts.driver_version is None
    assert facts.error == "nvmlSystemGetDriverVersion() failed: NVMLError_Unknown: Unknown"
