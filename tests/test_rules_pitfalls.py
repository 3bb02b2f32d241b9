"""The lab's rules, with hand-built facts: which device a run gets, and what `list` says."""

from __future__ import annotations

import pytest

from devcheck.pitfalls import REGISTRY, get
from devcheck.probe.devices import MachineFacts
from devcheck.rules.pitfalls import (
    MACHINE_DEPENDENT,
    choose_device,
    kinds_to_ask,
    machine_context,
    reproducible_here,
)

NO_DRIVER = "no NVIDIA driver (NVML library not found: libnvidia-ml.so.1)"
NOT_MAC = "MPS is Apple-only (this is Linux)"
CPU_BOX = {"cuda": NO_DRIVER, "mps": NOT_MAC}
ONE_GPU = {"cuda": None, "mps": NOT_MAC}


@pytest.mark.parametrize(("kinds", "requested", "asked"), [
    (("cuda", "mps", "cpu"), "auto", ("cuda", "mps")),
    (("cpu",), "auto", ()),
    (("cpu", "cuda"), "cpu", ()),  # a CPU run never pays for a CUDA query
    (("cpu", "cuda"), "cuda:1", ("cuda",)),
    (("cpu",), "cuda", ()),  # not a kind of this pitfall: skipped without asking
])
def test_kinds_to_ask(kinds: tuple[str, ...], requested: str, asked: tuple[str, ...]) -> None:
    assert kinds_to_ask(kinds, requested) == asked


@pytest.mark.parametrize(("kinds", "needs", "requested", "problems", "count", "expected"), [
    (("cuda", "mps", "cpu"), (), "auto", CPU_BOX, 0, ("cpu", None)),
    (("cuda", "mps", "cpu"), (), "auto", ONE_GPU, 1, ("cuda", None)),
    (("cuda", "mps"), (), "auto", CPU_BOX, 0,
     (None, f"needs cuda or mps; cuda: {NO_DRIVER}; mps: {NOT_MAC}")),
    (("cuda",), (), "cuda", CPU_BOX, 0, (None, f"needs cuda: {NO_DRIVER}")),
    (("cuda",), (), "cuda:1", ONE_GPU, 1, (None, "cuda:1 does not exist (1 GPU(s) visible)")),
    (("cuda",), (), "cuda:0", ONE_GPU, 1, ("cuda:0", None)),
    (("cuda",), ("multi-gpu",), "cuda", ONE_GPU, 1, (None, "needs cuda: needs 2+ GPUs, found 1")),
    (("cuda",), ("multi-gpu",), "auto", {"cuda": None}, 2, ("cuda", None)),
    (("cpu",), (), "mps", {}, 0, (None, "runs on cpu, not mps (try --device cpu)")),
    (("cpu",), ("fork",), "cpu", {}, 0, ("cpu", None)),
], ids=["auto-falls-to-cpu", "auto-prefers-cuda", "auto-nothing", "cuda-no-driver",
        "index-too-high", "index-ok", "multi-gpu-short", "multi-gpu-ok", "wrong-kind", "fork"])
def test_choose_device(kinds: tuple[str, ...], needs: tuple[str, ...], requested: str,
                       problems: dict[str, str | None], count: int,
                       expected: tuple[str | None, str | None]) -> None:
    assert choose_device(kinds, needs, requested, problems=problems, cuda_count=count,
                         fork_available=True) == expected


def test_choose_device_without_fork() -> None:
    assert choose_device(("cpu",), ("fork",), "cpu", problems={}, cuda_count=0,
                         fork_available=False) == (
        None, "needs the fork start method (Linux/macOS)")


def _machine(**over: object) -> MachineFacts:
    base: dict[str, object] = {"torch_installed": True, "cuda_build": "13.0",
                               "driver_cuda_version": None, "fork": True, "root": False,
                               "linux": True}
    base.update(over)
    return MachineFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("pitfall_id", "machine", "expected"), [
    ("numpy_on_requires_grad", _machine(torch_installed=False),
     (False, "torch is not installed")),
    ("numpy_on_requires_grad", _machine(), (True, "on cpu")),
    ("mixed_devices", _machine(), (False, "needs cuda or mps")),
    ("mixed_devices", _machine(driver_cuda_version=13000), (True, "on cuda")),
    ("mixed_devices", _machine(cuda_build=None, driver_cuda_version=13000),
     (False, "needs cuda or mps")),
    ("mixed_devices", _machine(mps_capable=True), (True, "on mps")),
    ("dataloader_shm_exhausted", _machine(), (False, "needs root")),
    ("dataloader_shm_exhausted", _machine(root=True, linux=False), (False, "needs Linux")),
    ("no_driver", _machine(driver_cuda_version=12040),
     (False, "an NVIDIA driver is installed")),
    ("no_driver", _machine(cuda_build=None), (False, "this torch build is CPU-only")),
    ("cpu_only_wheel", _machine(), (False, "this torch build has CUDA")),
    ("cpu_only_wheel", _machine(cuda_build=None),
     (True, "on cpu, if this machine fits (checked when run)")),
], ids=lambda v: v if isinstance(v, str) else None)
def test_reproducible_here(pitfall_id: str, machine: MachineFacts,
                           expected: tuple[bool, str]) -> None:
    assert reproducible_here(get(pitfall_id), machine) == expected


def test_machine_context_only_for_machine_dependent_pitfalls() -> None:
    assert machine_context("numpy_on_requires_grad", _machine()) is None
    assert "no_driver" in MACHINE_DEPENDENT
    assert machine_context("no_driver", _machine()) == (
        "torch built with CUDA 13.0; no NVIDIA driver (so no CUDA here: load checkpoints "
        "with map_location='cpu'). Full check: devcheck doctor")
    assert machine_context("no_driver", _machine(cuda_build=None, driver_cuda_version=13000)
                           ) == ("a CPU-only torch build (reinstall from a cuXXX index to use "
                                 "a GPU); an NVIDIA driver is installed. Full check: "
                                 "devcheck doctor")
    assert machine_context("no_driver", _machine(torch_installed=False)) == (
        "torch is not installed in this environment")
    assert MACHINE_DEPENDENT <= set(REGISTRY)
