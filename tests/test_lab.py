"""The lab: one torch import, a fresh isolated child per phase, timeouts, verdicts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from devcheck.pitfalls import get, lab
from devcheck.pitfalls.lab import Lab, PhaseResult, verdict


@pytest.fixture(scope="module")
def shared_lab() -> lab.Lab:
    if not hasattr(os, "fork"):
        pytest.skip("the zygote lab needs fork (Linux/macOS)")
    with Lab(mode="fork") as instance:
        yield instance


def _state(the_lab: Lab) -> dict[str, object]:
    return json.loads(the_lab.run_phase("-", "probe", "cpu").value)


def test_runs_do_not_leak_state_into_each_other(shared_lab: Lab) -> None:
    before = _state(shared_lab)
    # each of these changes process state in its child: env var, mount namespace,
    # a forced-failed CUDA init, torch.__future__ flags, sys.modules['__main__']
    for pid in ("gpu_checkpoint_on_cpu", "dataloader_shm_exhausted", "cuda_init_before_fork",
                "optimizer_before_model_to", "spawn_needs_importable_main"):
        shared_lab.run_phase(pid, "reproduce", "cpu")
    after = _state(shared_lab)
    assert after["pid"] != before["pid"]  # a fresh child each time
    for key in ("default_device", "cuda_initialized", "CUDA_VISIBLE_DEVICES",
                "shm_total_bytes", "overwrite_module_params", "main_module"):
        assert after[key] == before[key], key
    assert after["default_device"] == "cpu"
    # the zygote never touched CUDA, so its children may initialise it
    assert before["bad_fork"] is False and after["bad_fork"] is False


def test_torch_is_imported_once_not_per_run(shared_lab: Lab) -> None:
    # Children are forked from one zygote that already holds torch: fresh pid, same parent.
    first, second = _state(shared_lab), _state(shared_lab)
    assert first["pid"] != second["pid"]
    assert first["ppid"] == second["ppid"]
    assert first["torch_loaded_before_run"] and second["torch_loaded_before_run"]


def test_timeout_kills_the_run_and_the_lab_keeps_serving(shared_lab: Lab) -> None:
    r = shared_lab.run_phase("spawn_needs_importable_main", "fixed", "cpu", timeout_s=0.01)
    assert r.timed_out
    again = shared_lab.run_phase("numpy_on_requires_grad", "reproduce", "cpu")
    assert again.raised and get("numpy_on_requires_grad").matches_symptom(again.error_text)


def test_unknown_device_kind_is_skipped_with_reason(shared_lab: Lab) -> None:
    r = shared_lab.run_phase("numpy_on_requires_grad", "reproduce", "cuda")
    assert r.skipped and ("CUDA" in r.skipped or "cuda" in r.skipped)


def test_auto_device_picks_a_device_the_pitfall_supports(shared_lab: Lab) -> None:
    r = lab.run_pitfall(shared_lab, "unstable_softmax", "auto")
    assert r.status == "passed" and r.device in ("cpu", "cuda", "mps")


def test_spawn_mode_fresh_interpreter_per_phase() -> None:
    (r,) = lab.run_pitfalls(["numpy_on_requires_grad"], "cpu", mode="spawn")
    assert r.status == "passed", r.reason


def _phase(**kw: object) -> PhaseResult:
    return PhaseResult(phase=str(kw.pop("phase", "reproduce")), **kw)  # type: ignore[arg-type]


GRAD = get("numpy_on_requires_grad")
GRAD_MSG = "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy()"


def test_verdict_passed_only_with_own_symptom_and_working_fix() -> None:
    repro = _phase(raised=True, exc_type="RuntimeError", message=GRAD_MSG)
    assert verdict(GRAD, repro, _phase(phase="fixed", value="ok"))[0] == "passed"
    assert verdict(GRAD, repro, _phase(phase="fixed", raised=True, exc_type="E",
                                       message="x"))[0] == "failed"
    wrong = _phase(raised=True, exc_type="KeyError", message="'x'")
    status, reason = verdict(GRAD, wrong, _phase(phase="fixed"))
    assert status == "failed" and "not this pitfall's symptom" in reason
    status, reason = verdict(GRAD, _phase(), None)
    assert status == "failed" and "did not fail" in reason
    assert verdict(GRAD, _phase(skipped="needs cuda"), None) == ("skipped", "needs cuda")
    assert verdict(GRAD, _phase(timed_out=True, duration_s=3.0), None)[0] == "failed"


def test_run_result_json_has_id_status_reason() -> None:
    r = lab.RunResult(id="x", device="cpu", status="skipped", reason="why")
    assert {"id", "status", "reason"} <= set(r.to_dict())


def test_a_lab_that_cannot_start_reports_why(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # an interpreter whose torch import fails: every phase says why instead of hanging
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with Lab(mode="fork") as broken:
        r = broken.run_phase("numpy_on_requires_grad", "reproduce", "cpu")
    assert r.crashed and "failed to start" in r.crashed and "No module named" in r.crashed
    status, reason = verdict(get("numpy_on_requires_grad"), r, None)
    assert status == "failed" and "crashed" in reason
