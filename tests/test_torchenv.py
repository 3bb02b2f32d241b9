"""The torch probe: real facts on this machine, torch's reason kept, failures as facts."""

from __future__ import annotations

import time
import types
import warnings

import pytest
import torch

from devcheck.probe import torchenv


def test_real_probe_on_this_machine() -> None:
    facts = torchenv.probe_torch()
    assert facts.imported and facts.error is None
    assert facts.version == torch.__version__ and facts.cuda_version == torch.version.cuda
    assert facts.arch_list == tuple(torch.cuda.get_arch_list())
    assert facts.default_device == "cpu"
    cpu = facts.live_checks[0]
    assert cpu.device == "cpu" and cpu.ok and cpu.max_abs_error < 1e-4
    if not torch.cuda.is_available():
        assert facts.cuda_available is False and facts.devices == ()
        if torch.version.cuda:  # a CUDA wheel without a driver: torch's own words are kept
            assert facts.cuda_unavailable_reason
    else:
        assert [c.device for c in facts.live_checks[1:]][:1] == ["cuda:0"]


def test_no_live_means_no_live_checks() -> None:
    facts = torchenv.probe_torch(live=False)
    assert facts.imported and facts.live_checks == ()


def test_live_check_failure_is_a_fact() -> None:
    check = torchenv.live_check(torch, "meta")  # meta tensors cannot come back to the CPU
    assert not check.ok and check.error
    check = torchenv.live_check(torch, "no_such_device")
    assert not check.ok and "no_such_device" in check.error


def test_live_check_catches_wrong_results(monkeypatch: pytest.MonkeyPatch) -> None:
    real_matmul = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__",
                        lambda a, b: real_matmul(a, b) + (1.0 if a.dtype == torch.float32 else 0))
    check = torchenv.live_check(torch, "cpu")
    assert not check.ok and "differs from the CPU result" in check.error


def test_import_failure_is_a_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> types.ModuleType:
        raise ImportError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(torchenv, "_import_torch", broken)
    facts = torchenv.probe_torch()
    assert not facts.imported and "libcudnn.so.9" in facts.import_error
    assert facts.import_error.startswith("ImportError")


def test_hung_probe_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchenv, "collect_torch", lambda live: time.sleep(3))
    start = time.monotonic()
    facts = torchenv.probe_torch(timeout_s=0.2)
    assert time.monotonic() - start < 2
    assert not facts.imported and "timed out after 0.2s" in facts.error


def _fake_torch(*, available: bool, warning: str | None = None,
                init_error: str | None = None) -> types.SimpleNamespace:
    calls: list[str] = []

    def is_available() -> bool:
        if warning:
            warnings.warn(warning, UserWarning, stacklevel=2)
        return available

    def init() -> None:
        calls.append("init")
        if init_error:
            raise RuntimeError(init_error)

    cuda = types.SimpleNamespace(is_available=is_available, init=init, device_count=lambda: 1,
                                 get_device_properties=lambda i: types.SimpleNamespace(
                                     name="NVIDIA A100", major=8, minor=0, total_memory=40 << 30))
    return types.SimpleNamespace(cuda=cuda, version=types.SimpleNamespace(cuda="13.0"),
                                 calls=calls)


def test_torch_warning_becomes_the_reason() -> None:
    too_old = ("CUDA initialization: The NVIDIA driver on your system is too old "
               "(found version 12040).")
    fake = _fake_torch(available=False, warning=too_old)
    facts = torchenv._cuda_facts(fake, live=True)
    assert facts["cuda_unavailable_reason"] == too_old and fake.calls == []


def test_silent_unavailability_asks_init(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_torch(available=False, init_error="Found no NVIDIA driver on your system.")
    assert torchenv._cuda_facts(fake, live=True)["cuda_unavailable_reason"] == (
        "Found no NVIDIA driver on your system.")
    fake = _fake_torch(available=False, init_error="x")
    assert torchenv._cuda_facts(fake, live=False)["cuda_unavailable_reason"] is None
    assert fake.calls == []  # --no-live never initialises CUDA


def test_available_devices_listed() -> None:
    facts = torchenv._cuda_facts(_fake_torch(available=True), live=True)
    (dev,) = facts["devices"]
    assert (dev.name, dev.capability, dev.memory_total_bytes) == ("NVIDIA A100", "8.0", 40 << 30)
    assert facts["cuda_unavailable_reason"] is None


@pytest.mark.requires_cuda
def test_live_check_on_real_gpu() -> None:
    facts = torchenv.probe_torch()
    assert any(c.device == "cuda:0" and c.ok for c in facts.live_checks)
    assert facts.devices[0].capability and facts.devices[0].memory_total_bytes
