"""The two pitfalls added with the lint rules reproduce for real on a CPU and are explained."""

from __future__ import annotations

import pytest

from devcheck.pitfalls import get, lab
from devcheck.pitfalls.explain import explain_text

IDS = ["torch_load_weights_only", "no_cpu_fallback"]


@pytest.fixture(scope="module")
def sweep() -> dict[str, lab.RunResult]:
    return {r.id: r for r in lab.run_pitfalls(IDS, "cpu", timeout_s=120)}


@pytest.mark.parametrize("pitfall_id", IDS)
def test_reproduces_its_own_symptom_and_the_fix_passes(sweep: dict[str, lab.RunResult],
                                                       pitfall_id: str) -> None:
    r = sweep[pitfall_id]
    assert r.status == "passed", r.reason
    assert r.reproduce is not None and r.reproduce.raised
    assert get(pitfall_id).matches_symptom(r.reproduce.error_text)
    assert r.fixed is not None and not r.fixed.raised


def test_weights_only_fix_really_refused_the_payload(sweep: dict[str, lab.RunResult]) -> None:
    r = sweep["torch_load_weights_only"]
    assert r.fixed is not None and "Unsupported global" in r.fixed.value
    assert r.reproduce is not None and "code from the checkpoint ran" in r.reproduce.message


def test_torch_2_6_refusal_is_explained() -> None:
    text = ("_pickle.UnpicklingError: Weights only load failed. This file can still be loaded, "
            "to do so you have two options, do those steps only if you trust the source of "
            "the checkpoint.\n\tWeightsUnpickler error: Unsupported global: GLOBAL "
            "argparse.Namespace was not an allowed global by default.")
    assert explain_text(text)[0].id == "torch_load_weights_only"


def test_no_cpu_fallback_ranks_below_the_machine_causes() -> None:
    """Same messages as no_driver / cpu_only_wheel: the machine cause stays first."""
    ranked = [m.id for m in explain_text("AssertionError: Torch not compiled with CUDA enabled")]
    assert ranked[0] == "cpu_only_wheel" and "no_cpu_fallback" in ranked


@pytest.mark.requires_cuda
def test_on_a_gpu_machine_the_cpu_runner_reproduction_still_hides_the_gpu() -> None:
    """no_cpu_fallback hides the GPUs from its own process (CUDA_VISIBLE_DEVICES='') before
    CUDA starts; on a machine with a GPU that must still give the CPU runner's error."""
    (r,) = lab.run_pitfalls(["no_cpu_fallback"], "cpu", timeout_s=120)
    assert r.status == "passed", r.reason
    assert r.reproduce is not None and "No CUDA GPUs are available" in r.reproduce.error_text
    assert r.fixed is not None and "ran on cpu" in r.fixed.value
