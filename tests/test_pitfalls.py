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
from devcheck.probe import devices

# The research notes sit next to the repository (<repo>/../shared) in development and CI.
CATALOG = Path(__file__).resolve().parents[1].parent / "shared" / "PITFALLS.md"
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


def test_registry_starts_with_the_catalog_in_its_order() -> None:
    """The catalog's 22 ids keep their order; pitfalls added since come after or between."""
    ids = list(REGISTRY)
    assert [i for i in ids if i in CATALOG_IDS] == CATALOG_IDS
    for i in ALWAYS_ON_CPU + MACHINE_DEPENDENT_CPU:  # the lists below name CPU pitfalls
        assert i in CATALOG_IDS and "cpu" in get(i).needs, i
    assert not set(ALWAYS_ON_CPU) & set(MACHINE_DEPENDENT_CPU)


def test_catalog_notes_name_registry_ids() -> None:
    if not CATALOG.exists():
        pytest.skip(f"the research notes are not next to this checkout ({CATALOG})")
    table_ids = re.findall(r"^\| `(\w+)` \|", CATALOG.read_text(encoding="utf-8"), re.M)
    assert sorted(table_ids) == sorted(CATALOG_IDS)


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


@pytest.mark.parametrize("pitfall", [p for p in all_pitfalls() if p.related],
                         ids=lambda p: p.id)
def test_related_pitfalls_exist(pitfall: Pitfall) -> None:
    """``related`` feeds `pitfalls show`'s "See also": every id must resolve."""
    assert pitfall.id not in pitfall.related
    for other in pitfall.related:
        assert get(other).id == other


def test_get_unknown_id_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known ids: default_device_sampler_generator"):
        get("nope")


def test_registry_import_does_not_import_torch() -> None:
    code = "import sys, devcheck.pitfalls; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def cpu_sweep() -> dict[str, lab.RunResult]:
    return {r.id: r for r in lab.run_pitfalls(list(REGISTRY), "cpu", timeout_s=120)}


@pytest.mark.parametrize("pitfall_id", ALWAYS_ON_CPU)
def test_cpu_pitfall_reproduces_its_own_symptom_and_fix_passes(
        cpu_sweep: dict[str, lab.RunResult], pitfall_id: str) -> None:
    r = cpu_sweep[pitfall_id]
    assert r.status == "passed", r.reason
    assert r.reproduce is not None and r.reproduce.raised
    assert get(pitfall_id).matches_symptom(r.reproduce.error_text)
    assert r.fixed is not None and not r.fixed.raised and not r.fixed.skipped


@pytest.mark.parametrize("pitfall_id", [i for i in REGISTRY if i not in ALWAYS_ON_CPU])
def test_every_other_pitfall_passes_or_says_why_not(
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
    kinds = " or ".join(get(pitfall_id).device_kinds)
    assert r.reason.startswith(f"runs on {kinds}, not cpu (try --device ")


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
    if devices.driver_cuda_version() is None:  # cheap: the marker's skip comes after fixture setup
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


@pytest.mark.parametrize(("built", "device", "skips"), [
    (True, "cpu", False),  # a CUDA build without a GPU: the stand-in runs for real
    (False, "cpu", True),  # a CPU-only wheel (CI's CPU runner): a different error, so skip
    (False, "cuda", False),  # asked for cuda: the lab already checked CUDA works
], ids=["cuda-build", "cpu-only-build", "on-cuda"])
def test_cuda_init_before_fork_precondition(monkeypatch: pytest.MonkeyPatch, built: bool,
                                            device: str, skips: bool) -> None:
    """A CPU-only wheel raises 'Torch not compiled with CUDA enabled' in the worker, not the
    bad-fork error: the CPU stand-in must say so instead of failing."""
    from devcheck.pitfalls import Skip, cuda_init_before_fork

    monkeypatch.setattr(devices, "cuda_built", lambda: built)
    if skips:
        with pytest.raises(Skip, match="CPU-only"):
            cuda_init_before_fork.precondition(device)
    else:
        cuda_init_before_fork.precondition(device)


def test_cuda_init_before_fork_runs_for_real_on_a_cuda_build(
        cpu_sweep: dict[str, lab.RunResult]) -> None:
    """Where the build has CUDA (a GPU is not needed) the CPU stand-in must pass, not skip."""
    if not devices.cuda_built():
        pytest.skip("CPU-only torch build: the stand-in needs CUDA support compiled in")
    r = cpu_sweep["cuda_init_before_fork"]
    assert r.status == "passed", r.reason
    assert r.reproduce is not None
    assert get("cuda_init_before_fork").matches_symptom(r.reproduce.error_text)


@pytest.mark.parametrize(("wheel", "driver", "cuda_works", "skip"), [
    (None, 12040, False, "this torch build is CPU-only"),
    (12080, None, False, "no NVIDIA driver here"),
    (12080, 13000, True, "the driver supports CUDA 13.0 >= the wheel's CUDA 12.8"),
    (12080, 12040, True, "minor-version compatibility"),  # 12.4 runs a cu12.8 wheel
    (13000, 12040, False, None),  # really too old: the run goes ahead
], ids=["cpu-build", "no-driver", "new-enough", "minor-compat", "too-old"])
def test_driver_too_old_precondition(monkeypatch: pytest.MonkeyPatch, wheel: int | None,
                                     driver: int | None, cuda_works: bool,
                                     skip: str | None) -> None:
    from devcheck.pitfalls import Skip, driver_too_old

    monkeypatch.setattr(devices, "wheel_cuda_version", lambda: wheel)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: driver)
    monkeypatch.setattr(devices, "cuda_available", lambda: cuda_works)
    if skip is None:
        driver_too_old.precondition("cpu")
    else:
        with pytest.raises(Skip, match=re.escape(skip)):
            driver_too_old.precondition("cpu")


@pytest.mark.parametrize(("cuda", "hip", "driver", "cpu_only_skip", "no_driver_skip"), [
    (None, None, None, None, "is CPU-only; see cpu_only_wheel"),
    ("13.0", None, None, "has CUDA 13.0; the pitfall needs a CPU-only build", None),
    ("13.0", None, 13000, "has CUDA 13.0", "an NVIDIA driver is installed here"),
    (None, "6.4", None, "has ROCm 6.4", "is CPU-only"),
], ids=["cpu-wheel", "cuda-wheel-no-driver", "cuda-wheel-driver", "rocm-wheel"])
def test_build_and_driver_preconditions(
        monkeypatch: pytest.MonkeyPatch, cuda: str | None, hip: str | None,
        driver: int | None, cpu_only_skip: str | None, no_driver_skip: str | None) -> None:
    """Which of cpu_only_wheel / no_driver this machine can show, from the probe's answers."""
    from devcheck.pitfalls import Skip, cpu_only_wheel, no_driver

    monkeypatch.setattr(devices, "cuda_build_version", lambda: cuda)
    monkeypatch.setattr(devices, "hip_build_version", lambda: hip)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: driver)
    for precondition, skip in ((cpu_only_wheel.precondition, cpu_only_skip),
                               (no_driver.precondition, no_driver_skip)):
        if skip is None:
            precondition("cpu")
        else:
            with pytest.raises(Skip, match=re.escape(skip)):
                precondition("cpu")


@pytest.mark.parametrize(("capability", "arches", "skips"), [
    ((9, 0), ("sm_80", "sm_90", "sm_100"), True),
    ((8, 6), ("sm_80", "sm_90"), True),  # sm_80 kernels run on an sm_86 GPU
    ((6, 1), ("sm_75", "sm_80", "sm_90"), False),  # a Pascal card, a wheel without sm_6x
    ((12, 0), ("sm_80", "sm_90", "sm_100"), False),  # newer than every kernel
], ids=["listed", "same-major", "too-old-gpu", "too-new-gpu"])
def test_gpu_arch_precondition(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int],
                               arches: tuple[str, ...], skips: bool) -> None:
    from devcheck.pitfalls import Skip, gpu_arch_not_in_wheel

    asked: list[int] = []
    monkeypatch.setattr(devices, "cuda_capability", lambda i: asked.append(i) or capability)
    monkeypatch.setattr(devices, "cuda_arch_list", lambda: arches)
    if skips:
        with pytest.raises(Skip, match="supported by the wheel's kernels"):
            gpu_arch_not_in_wheel.precondition("cuda:1")
    else:
        gpu_arch_not_in_wheel.precondition("cuda:1")
    assert asked == [1]  # the device the run was asked for, not always GPU 0
