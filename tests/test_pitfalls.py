"""Every pitfall, for real: its reproduction raises its own symptom and its fix passes.

The CPU sweep runs once per module through the lab (one torch import, a forked child per
phase). GPU-only pitfalls run on a CUDA device under ``requires_cuda``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devcheck.pitfalls import REGISTRY, Pitfall, all_pitfalls, get, lab
from devcheck.pitfalls._base import DEVICE_KINDS, REQUIREMENTS

CATALOG = Path("/work/shared/PITFALLS.md")
CATALOG_IDS = [
    "default_device_sampler_generator", "default_device_fork_worker", "mixed_devices",
    "tensor_to_not_inplace", "cuda_tensor_to_numpy", "numpy_on_requires_grad",
    "cpu_only_wheel", "no_driver", "driver_too_old", "gpu_arch_not_in_wheel",
    "invalid_device_ordinal", "gpu_checkpoint_on_cpu", "cuda_init_before_fork",
    "dataloader_shm_exhausted", "spawn_needs_importable_main",
    "pin_memory_without_accelerator", "hidden_host_sync", "optimizer_before_model_to",
    "device_side_assert", "cuda_available_but_unused", "notebook_plot_in_script",
    "unstable_softmax",
]
# Reproducible on any machine with torch (CPU device): these must pass, never skip.
ALWAYS_ON_CPU = [
    "tensor_to_not_inplace", "numpy_on_requires_grad", "gpu_checkpoint_on_cpu",
    "spawn_needs_importable_main", "optimizer_before_model_to",
    "device_side_assert", "notebook_plot_in_script", "unstable_softmax",
]
# Need this machine to fit (no driver, root, a CPU-only build...): pass or skip with reason.
MACHINE_DEPENDENT_CPU = [
    "no_driver", "dataloader_shm_exhausted", "pin_memory_without_accelerator",
    "cpu_only_wheel", "driver_too_old",
    "cuda_init_before_fork",  # needs a CUDA build (CI's CPU runner installs CPU-only wheels)
]
GPU_ONLY = [p.id for p in all_pitfalls() if "cpu" not in p.needs]


def test_registry_covers_the_catalog_with_its_ids() -> None:
    assert list(REGISTRY) == CATALOG_IDS
    if CATALOG.exists():  # the research notes, when present, list the same ids
        table_ids = re.findall(r"^\| `(\w+)` \|", CATALOG.read_text(), re.M)
        assert sorted(table_ids) == sorted(CATALOG_IDS)
    assert len(REGISTRY) >= 18
    assert sorted(ALWAYS_ON_CPU + MACHINE_DEPENDENT_CPU + GPU_ONLY) == sorted(CATALOG_IDS)


@pytest.mark.parametrize("pitfall", all_pitfalls(), ids=lambda p: p.id)
def test_pitfall_is_complete(pitfall: Pitfall) -> None:
    assert pitfall.title and pitfall.mechanism and pitfall.source
    assert pitfall.device_kinds, "needs at least one device kind"
    assert set(pitfall.needs) <= set(DEVICE_KINDS) | set(REQUIREMENTS)
    assert pitfall.symptoms and pitfall.fixes
    for s in pitfall.symptoms:
        assert s.anchor == s.anchor.lower() and s.anchor in s.example.lower()
        assert s.compiled().search(s.example), s.pattern
        assert pitfall.matches_symptom(s.example)
    for f in pitfall.fixes:
        assert f.title and f.code.strip()
    assert callable(pitfall.reproduce) and callable(pitfall.fixed)
    assert get(pitfall.id) is pitfall


def test_get_unknown_id_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known ids: default_device_sampler_generator"):
        get("nope")


def test_registry_import_does_not_import_torch() -> None:
    code = "import sys, devcheck.pitfalls; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def cpu_sweep() -> dict[str, lab.RunResult]:
    ids = ALWAYS_ON_CPU + MACHINE_DEPENDENT_CPU + GPU_ONLY
    return {r.id: r for r in lab.run_pitfalls(ids, "cpu", timeout_s=120)}


@pytest.mark.parametrize("pitfall_id", ALWAYS_ON_CPU)
def test_cpu_pitfall_reproduces_its_own_symptom_and_fix_passes(
        cpu_sweep: dict[str, lab.RunResult], pitfall_id: str) -> None:
    r = cpu_sweep[pitfall_id]
    assert r.status == "passed", r.reason
    assert r.reproduce is not None and r.reproduce.raised
    assert get(pitfall_id).matches_symptom(r.reproduce.error_text)
    assert r.fixed is not None and not r.fixed.raised and not r.fixed.skipped


@pytest.mark.parametrize("pitfall_id", MACHINE_DEPENDENT_CPU)
def test_machine_dependent_pitfall_passes_or_says_why_not(
        cpu_sweep: dict[str, lab.RunResult], pitfall_id: str) -> None:
    r = cpu_sweep[pitfall_id]
    assert r.status in ("passed", "skipped"), r.reason
    if r.status == "skipped":
        assert len(r.reason) > 10
        pytest.skip(f"not reproducible on this machine: {r.reason}")
    assert r.reproduce is not None
    assert get(pitfall_id).matches_symptom(r.reproduce.error_text)


@pytest.mark.parametrize("pitfall_id", GPU_ONLY)
def test_gpu_pitfalls_are_skipped_on_cpu_with_a_reason(
        cpu_sweep: dict[str, lab.RunResult], pitfall_id: str) -> None:
    r = cpu_sweep[pitfall_id]
    assert r.status == "skipped"
    assert "runs on" in r.reason and "not cpu" in r.reason


CUDA_MUST_PASS = [
    "default_device_sampler_generator", "default_device_fork_worker", "mixed_devices",
    "cuda_tensor_to_numpy", "invalid_device_ordinal", "hidden_host_sync",
    "cuda_available_but_unused", "tensor_to_not_inplace", "device_side_assert",
    "cuda_init_before_fork", "numpy_on_requires_grad", "optimizer_before_model_to",
    "spawn_needs_importable_main", "notebook_plot_in_script", "unstable_softmax",
]
CUDA_MACHINE_DEPENDENT = ["gpu_arch_not_in_wheel", "driver_too_old"]


@pytest.fixture(scope="module")
def cuda_sweep() -> dict[str, lab.RunResult]:
    """One lab for every CUDA run (one torch import); only set up on a CUDA machine."""
    from devcheck.pitfalls._driver import driver_cuda_version

    if driver_cuda_version() is None:  # cheap: the marker's skip comes after fixture setup
        pytest.skip("no NVIDIA driver")
    ids = CUDA_MUST_PASS + CUDA_MACHINE_DEPENDENT
    return {r.id: r for r in lab.run_pitfalls(ids, "cuda", timeout_s=180)}


@pytest.mark.requires_cuda
@pytest.mark.parametrize("pitfall_id", CUDA_MUST_PASS)
def test_pitfall_on_cuda(cuda_sweep: dict[str, lab.RunResult], pitfall_id: str) -> None:
    r = cuda_sweep[pitfall_id]
    assert r.status == "passed", r.reason
    assert r.device.startswith("cuda")
    assert r.reproduce is not None and get(pitfall_id).matches_symptom(r.reproduce.error_text)


@pytest.mark.requires_cuda
@pytest.mark.parametrize("pitfall_id", CUDA_MACHINE_DEPENDENT)
def test_machine_dependent_gpu_pitfalls(cuda_sweep: dict[str, lab.RunResult],
                                        pitfall_id: str) -> None:
    r = cuda_sweep[pitfall_id]
    assert r.status in ("passed", "skipped"), r.reason


def test_hidden_host_sync_counts_only_sync_warnings_and_restores_the_mode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fix is judged by counting torch's 'warn'-mode reports, bare step vs fix.

    No GPU here, so torch's sync reporting is stood in for by the warning it emits; this
    pins the counting (other warnings ignored, every repeat counted, mode always reset).
    """
    import warnings

    import torch

    from devcheck.pitfalls import hidden_host_sync

    modes: list[object] = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def step() -> None:
        for _ in range(3):  # same line thrice: 'always' must keep every one
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("Synchronization debug mode is a prototype feature", UserWarning,
                      stacklevel=1)

    assert hidden_host_sync._count_syncs(step) == 3
    assert modes == ["warn", 0]

    def failing() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        hidden_host_sync._count_syncs(failing)
    assert modes[-1] == 0


def test_cuda_init_before_fork_skips_on_a_cpu_only_build(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU-only wheel raises 'Torch not compiled with CUDA enabled' in the worker, not the
    bad-fork error: the CPU stand-in must say so instead of failing (CI's CPU runner)."""
    import torch

    from devcheck.pitfalls import Skip, cuda_init_before_fork

    cuda_init_before_fork.precondition("cpu")  # this machine: a CUDA build, runs for real
    assert torch.backends.cuda.is_built()
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    with pytest.raises(Skip, match="CPU-only"):
        cuda_init_before_fork.precondition("cpu")


def test_cuda_init_before_fork_runs_for_real_on_a_cuda_build(
        cpu_sweep: dict[str, lab.RunResult]) -> None:
    """Where the build has CUDA (a GPU is not needed) the CPU stand-in must pass, not skip."""
    import torch

    if not torch.backends.cuda.is_built():
        pytest.skip(f"CPU-only torch build ({torch.__version__})")
    r = cpu_sweep["cuda_init_before_fork"]
    assert r.status == "passed", r.reason
    assert r.reproduce is not None
    assert get("cuda_init_before_fork").matches_symptom(r.reproduce.error_text)


def test_driver_too_old_skips_when_minor_version_compatibility_saves_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Driver 12.4 with a cu12.8 wheel still runs CUDA: that is no reproduction, so skip."""
    import torch

    from devcheck.pitfalls import Skip, driver_too_old

    monkeypatch.setattr(driver_too_old, "wheel_cuda_version", lambda: 12080)
    monkeypatch.setattr(driver_too_old, "driver_cuda_version", lambda: 12040)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(Skip, match="minor-version compatibility"):
        driver_too_old.precondition("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    driver_too_old.precondition("cpu")  # a real too-old driver: the run goes ahead
    monkeypatch.setattr(driver_too_old, "driver_cuda_version", lambda: 13000)
    with pytest.raises(Skip, match=">= the wheel's CUDA"):
        driver_too_old.precondition("cpu")
