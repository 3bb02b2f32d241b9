"""The lab: one torch import, a fresh isolated child per phase, timeouts, verdicts, and no
process left behind however the run ends.

Phases the registry does not have (a process probe, a phase that hangs or starts workers
that never return) come from tests/lab_probes.py through the lab's ``module:ATTR`` seam.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from devcheck.pitfalls import get, lab
from devcheck.pitfalls.lab import Lab, PhaseResult, verdict
from devcheck.pitfalls.lab.results import resolve

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # lab_probes, for this process too (the parent resolves ids)

import lab_probes  # noqa: E402

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the zygote lab needs fork")


@pytest.fixture(scope="module")
def probes_env() -> Iterator[None]:
    """Children import lab_probes by name: put tests/ on their PYTHONPATH."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
            str(TESTS), os.environ.get("PYTHONPATH")])))
        yield


@pytest.fixture(scope="module")
def shared_lab(probes_env: None) -> Iterator[Lab]:
    if not hasattr(os, "fork"):
        pytest.skip("the zygote lab needs fork (Linux/macOS)")
    with Lab(mode="fork") as instance:
        yield instance


def _state(the_lab: Lab) -> dict[str, object]:
    r = the_lab.run_phase(lab_probes.STATE.id, "fixed", "cpu")
    assert r.value, r
    return dict(json.loads(r.value))


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


def test_torch_is_imported_once_and_each_phase_leads_its_own_group(shared_lab: Lab) -> None:
    # Children are forked from one zygote that already holds torch: fresh pid, same parent.
    first, second = _state(shared_lab), _state(shared_lab)
    assert first["pid"] != second["pid"]
    assert first["ppid"] == second["ppid"]
    assert first["torch_loaded_before_run"] and second["torch_loaded_before_run"]
    assert first["pgid"] == first["pid"] and second["pgid"] == second["pid"]


def test_timeout_kills_the_run_names_the_limit_and_the_lab_keeps_serving(
        shared_lab: Lab) -> None:
    r = shared_lab.run_phase(lab_probes.HANGS.id, "reproduce", "cpu", timeout_s=0.5)
    assert r.timed_out and r.timeout_s == 0.5 and not r.raised
    status, reason = verdict(lab_probes.HANGS, r, None)
    assert status == "failed"
    assert reason == "reproduce timed out after 0.5 s (the --timeout limit per phase)"
    again = shared_lab.run_phase("numpy_on_requires_grad", "reproduce", "cpu")
    assert again.raised and get("numpy_on_requires_grad").matches_symptom(again.error_text)


def test_a_child_that_dies_without_a_result_is_a_crash(shared_lab: Lab) -> None:
    r = shared_lab.run_phase(lab_probes.CRASHES.id, "reproduce", "cpu")
    assert r.crashed == "exit code 3" and not r.raised
    assert verdict(lab_probes.CRASHES, r, None) == (
        "failed", "reproduce crashed (exit code 3)")


def test_cuda_on_this_machine_is_skipped_with_the_doctors_reason(
        shared_lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from devcheck.probe import devices

    r = shared_lab.run_phase("mixed_devices", "reproduce", "cuda")
    if r.skipped is None:
        pytest.skip(f"CUDA works here: ran on {r.device}")
    # the same words the doctor uses for this machine (its rules, not a reason of our own)
    import torch  # noqa: F401  (availability() asks torch in this process)

    monkeypatch.setattr(devices, "_CHEAP", [])
    reason = devices.availability().cuda_reason
    assert reason and r.skipped == f"needs cuda: {reason}"


def test_a_cpu_only_pitfall_asked_for_cuda_says_which_device_to_use(shared_lab: Lab) -> None:
    r = shared_lab.run_phase(lab_probes.STATE.id, "reproduce", "cuda:1")
    assert r.skipped == "runs on cpu, not cuda:1 (try --device cpu)"


def test_auto_device_picks_a_device_the_pitfall_supports(shared_lab: Lab) -> None:
    r = lab.run_pitfall(shared_lab, "unstable_softmax", "auto")
    assert r.status == "passed", r.reason
    assert r.device in get("unstable_softmax").device_kinds


def test_spawn_mode_fresh_interpreter_per_phase(probes_env: None) -> None:
    (r,) = lab.run_pitfalls(["numpy_on_requires_grad"], "cpu", mode="spawn")
    assert r.status == "passed", r.reason


def test_spawn_mode_timeout_kills_the_phase(probes_env: None) -> None:
    with Lab(mode="spawn") as fresh:
        r = fresh.run_phase(lab_probes.HANGS.id, "reproduce", "cpu", timeout_s=1.0)
    assert r.timed_out and r.timeout_s == 1.0


def test_an_unknown_lab_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="lab mode 'forked'"):
        Lab(mode="forked")


def test_the_parent_side_never_imports_torch() -> None:
    """``pitfalls run`` imports the lab in the CLI's process: torch belongs to the zygote."""
    code = ("import sys\nfrom devcheck.pitfalls import lab\n"
            "from devcheck.rules import pitfalls\nfrom devcheck.probe import devices\n"
            "devices.probe_machine()\nassert 'torch' not in sys.modules, 'torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_references_outside_the_registry_must_name_a_pitfall() -> None:
    assert resolve(lab_probes.STATE.id) is lab_probes.STATE
    assert resolve("numpy_on_requires_grad") is get("numpy_on_requires_grad")
    with pytest.raises(KeyError, match="not a Pitfall"):
        resolve("lab_probes:NOT_A_PITFALL")
    with pytest.raises(KeyError, match="no pitfall"):
        resolve("lab_probes:MISSING")
    with pytest.raises(KeyError, match="known ids"):
        resolve("nope")


def _phase(**kw: object) -> PhaseResult:
    return PhaseResult(phase=str(kw.pop("phase", "reproduce")), **kw)  # type: ignore[arg-type]


GRAD = get("numpy_on_requires_grad")
GRAD_MSG = "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy()"
RAISED = _phase(raised=True, exc_type="RuntimeError", message=GRAD_MSG)


@pytest.mark.parametrize(("reproduce", "fixed", "status", "reason"), [
    (RAISED, _phase(phase="fixed", value="ok"), "passed",
     "reproduced RuntimeError: " + GRAD_MSG + "; fixed: ok"),
    (RAISED, _phase(phase="fixed", raised=True, exc_type="E", message="x"), "failed",
     "fixed failed: E: x"),
    (RAISED, _phase(phase="fixed", skipped="no GPU"), "skipped", "fixed: no GPU"),
    (RAISED, None, "failed", "fixed was not run"),
    (_phase(raised=True, exc_type="KeyError", message="'x'"), _phase(phase="fixed"), "failed",
     "reproduce raised KeyError: 'x', not this pitfall's symptom"),
    (_phase(), None, "failed", "reproduce did not fail: the pitfall did not happen here"),
    (_phase(skipped="needs cuda"), None, "skipped", "needs cuda"),
    (_phase(timed_out=True, timeout_s=3.0, duration_s=3.2), None, "failed",
     "reproduce timed out after 3 s (the --timeout limit per phase)"),
    (_phase(crashed="killed by signal 11"), None, "failed",
     "reproduce crashed (killed by signal 11)"),
    (RAISED, _phase(phase="fixed", timed_out=True, timeout_s=120.0), "failed",
     "fixed failed: fixed timed out after 120 s (the --timeout limit per phase)"),
], ids=["passed", "fix-raised", "fix-skipped", "fix-not-run", "wrong-symptom", "no-error",
        "skipped", "timeout", "crash", "fix-timeout"])
def test_verdict(reproduce: PhaseResult, fixed: PhaseResult | None, status: str,
                 reason: str) -> None:
    assert verdict(GRAD, reproduce, fixed) == (status, reason)


def test_run_result_json_keeps_both_phases() -> None:
    r = lab.RunResult(id="x", device="cpu", status="failed", reason="why",
                      reproduce=_phase(timed_out=True, timeout_s=2.0))
    doc = json.loads(json.dumps(r.to_dict()))
    assert doc["reproduce"]["timeout_s"] == 2.0 and doc["fixed"] is None
    assert (doc["id"], doc["status"], doc["reason"]) == ("x", "failed", "why")


@needs_fork
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


# ---------------------------------------------------------------- no orphans (issue 9.3)

_CLI = """
import sys
import lab_probes
from devcheck import pitfalls
from devcheck.cli import cli
probe = getattr(lab_probes, sys.argv[1])
pitfalls.REGISTRY[probe.id] = probe
cli(["pitfalls", "run", probe.id, "--device", sys.argv[2], "--timeout", "600"])
"""


def _start_cli(markers: Path, probe: str, device: str) -> subprocess.Popen[str]:
    """``devcheck pitfalls run`` on a lab probe, in its own session (like a terminal's job)."""
    env = {**os.environ, lab_probes.MARKERS_ENV: str(markers),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS),
                                                       os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", _CLI, probe, device], env=env,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Callable[[], bool], what: str, limit_s: float = 120.0) -> None:
    """Poll a condition (not a duration): fail only if it never holds within a generous limit."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {limit_s:g} s")
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@needs_fork
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize(("how", "exit_code"), [
    ("ctrl-c", 130),  # SIGINT to the terminal's foreground group: the CLI and the zygote
    ("sigint", 130),  # SIGINT to the CLI alone
    ("sigterm", 143),
    ("sigkill", -9),  # no cleanup possible in the CLI: the parent-death signals do it
])
def test_stopping_pitfalls_run_leaves_no_process_behind(
        tmp_path: Path, how: str, exit_code: int) -> None:
    proc = _start_cli(tmp_path, "WORKERS", "cpu")
    tree: list[int] = []
    try:
        _wait_for(lambda: len(list(tmp_path.glob("worker-*"))) == 2
                  and len(list(tmp_path.glob("phase-*"))) == 1, "the phase and its 2 workers")
        tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        markers = {int(p.name.split("-")[1]) for p in tmp_path.iterdir()}
        assert markers <= set(tree) and len(tree) >= 4  # zygote, phase child, 2 workers
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM,
                               "sigkill": signal.SIGKILL}[how])
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == exit_code, err
        if how != "sigkill":
            assert err.strip().splitlines()[-1].startswith("devcheck pitfalls run: stopped by ")
            assert "Traceback" not in err
        _wait_for(lambda: not any(_running(p) for p in tree), "every process to end", 30.0)
    finally:
        for pid in [proc.pid, *tree]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()


@needs_fork
def test_the_zygote_ends_the_phase_when_its_input_closes(tmp_path: Path) -> None:
    """Without a parent-death signal (macOS), a parent that vanished is seen as the end of
    the zygote's input: the running phase's group is killed, and the zygote exits."""
    env = {**os.environ, lab_probes.MARKERS_ENV: str(tmp_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS),
                                                       os.environ.get("PYTHONPATH")]))}
    zygote = subprocess.Popen([sys.executable, "-m", "devcheck.pitfalls.lab", "--serve"],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert zygote.stdin is not None and zygote.stdout is not None
    pids: list[int] = []
    try:
        said = [json.loads(zygote.stdout.readline()) for _ in range(3)]
        assert said == [{"stage": "torch"}, {"stage": "lab"}, {"ready": True}]
        zygote.stdin.write(json.dumps({"id": lab_probes.WORKERS.id, "phase": "reproduce",
                                       "device": "cpu", "timeout_s": 600}) + "\n")
        zygote.stdin.flush()
        phase = json.loads(zygote.stdout.readline())["started"]
        _wait_for(lambda: len(list(tmp_path.glob("worker-*"))) == 2, "2 workers")
        pids = [phase, *(int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*"))]
        zygote.stdin.close()
        assert zygote.wait(timeout=60) == 128 + signal.SIGHUP
        _wait_for(lambda: not any(_running(p) for p in pids), "the phase group to end", 30.0)
    finally:
        for pid in [zygote.pid, *pids]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        zygote.wait()


@needs_fork
def test_a_zygote_killed_mid_phase_takes_the_phase_group_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of the zygote (an OOM kill): the phase child dies by its parent-death
    signal, but its workers are the parent's to kill, and the failure says what happened."""
    import threading

    monkeypatch.setenv(lab_probes.MARKERS_ENV, str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(TESTS), os.environ.get("PYTHONPATH")])))
    results: list[PhaseResult] = []
    pids: list[int] = []
    with Lab(mode="fork") as the_lab:
        runner = threading.Thread(target=lambda: results.append(the_lab.run_phase(
            lab_probes.WORKERS.id, "reproduce", "cpu", timeout_s=600)))
        runner.start()
        try:
            _wait_for(lambda: len(list(tmp_path.glob("worker-*"))) == 2, "2 workers")
            pids = [int(p.name.split("-")[1]) for p in tmp_path.iterdir()]
            assert the_lab._proc is not None
            os.kill(the_lab._proc.pid, signal.SIGKILL)
            runner.join(60)
            assert not runner.is_alive()
            _wait_for(lambda: not any(_running(p) for p in pids), "the phase group to end",
                      30.0)
        finally:
            for pid in pids:
                if _running(pid):
                    os.kill(pid, signal.SIGKILL)
    (r,) = results
    assert r.crashed == (
        "the lab process (python -m devcheck.pitfalls.lab --serve) crashed with SIGKILL "
        "(signal 9) during this phase (SIGKILL: often the kernel's out-of-memory killer, see "
        "`dmesg`); it and the phase's processes were killed")


@pytest.mark.requires_cuda
def test_ctrl_c_during_a_cuda_phase_frees_the_gpu(tmp_path: Path) -> None:
    """The phase holds a CUDA context and GPU memory when Ctrl-C arrives: afterwards no
    process of the run survives and none is left on the GPU (NVML's process list)."""
    from devcheck.probe import nvml

    proc = _start_cli(tmp_path, "ON_CUDA", "cuda")
    tree: list[int] = []
    try:
        _wait_for(lambda: bool(list(tmp_path.glob("phase-*"))), "the CUDA phase")
        tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        phase = int(next(tmp_path.glob("phase-*")).name.split("-")[1])
        assert phase in tree
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        _wait_for(lambda: not any(_running(p) for p in tree), "every process to end", 30.0)

        def on_gpu() -> set[int]:
            return {q.pid for g in nvml.probe_nvml().gpus for q in g.processes} & set(tree)

        _wait_for(lambda: not on_gpu(), "the GPU to release the phase's context", 30.0)
    finally:
        for pid in [proc.pid, *tree]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
