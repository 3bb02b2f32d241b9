"""``devcheck pitfalls ...`` and ``devcheck explain`` through click, with exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from devcheck.cli import cli
from devcheck.pitfalls import REGISTRY
from devcheck.probe.devices import MachineFacts

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data" / "explain"
sys.path.insert(0, str(TESTS))  # lab_probes (phases the registry does not have)


def invoke(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.output


def test_list_text_and_json() -> None:
    code, out = invoke("pitfalls", "list")
    assert code == 0
    for pid in REGISTRY:
        assert pid in out
    code, out = invoke("pitfalls", "list", "--json")
    rows = json.loads(out)["pitfalls"]
    assert [r["id"] for r in rows] == list(REGISTRY)
    assert {"id", "title", "needs", "reproducible_here"} <= set(rows[0])
    by_id = {r["id"]: r for r in rows}
    assert by_id["numpy_on_requires_grad"]["reproducible_here"] is True


def test_show_prints_symptom_mechanism_fix() -> None:
    code, out = invoke("pitfalls", "show", "default_device_sampler_generator")
    assert code == 0
    assert "Expected a 'cuda' device type for generator" in out
    assert "DeviceContext" in out and "Fix, best first" in out
    assert "devcheck pitfalls run default_device_sampler_generator" in out
    code, out = invoke("pitfalls", "show", "mixed_devices", "--json")
    assert json.loads(out)["id"] == "mixed_devices"


def test_unknown_id_is_a_usage_error() -> None:
    code, out = invoke("pitfalls", "show", "nope")
    assert code == 2 and "known ids" in out
    code, out = invoke("pitfalls", "run", "nope")
    assert code == 2


def test_run_needs_an_id_or_all() -> None:
    assert invoke("pitfalls", "run")[0] == 2
    assert invoke("pitfalls", "run", "x", "--all")[0] == 2
    assert invoke("pitfalls", "run", "numpy_on_requires_grad", "--device", "tpu")[0] == 2


def test_run_one_shows_error_then_fix() -> None:
    code, out = invoke("pitfalls", "run", "numpy_on_requires_grad", "--device", "cpu")
    assert code == 0, out
    assert "raised RuntimeError: Can't call numpy()" in out
    assert "matches the pitfall's own symptom" in out
    assert "succeeded" in out and "PASSED" in out


def test_run_gpu_pitfall_on_cpu_is_skipped_not_faked() -> None:
    code, out = invoke("pitfalls", "run", "mixed_devices", "--device", "cpu", "--json")
    assert code == 0
    (r,) = json.loads(out)["results"]
    assert r["status"] == "skipped" and r["reason"]


def test_run_all_cpu_json_sweep() -> None:
    code, out = invoke("pitfalls", "run", "--all", "--device", "cpu", "--json")
    data = json.loads(out)
    assert [r["id"] for r in data["results"]] == list(REGISTRY)
    for r in data["results"]:
        assert r["status"] in ("passed", "skipped", "failed") and r["reason"]
    assert data["summary"]["failed"] == 0, [r for r in data["results"]
                                            if r["status"] == "failed"]
    assert code == 0
    assert data["summary"]["passed"] >= 9


def test_explain_file_stdin_and_json() -> None:
    path = str(DATA / "learner_windows_notebook.txt")
    code, out = invoke("explain", path)
    assert code == 0
    assert out.startswith("Most likely: default_device_sampler_generator")
    assert "devcheck pitfalls run default_device_sampler_generator" in out
    code, out = invoke("explain", "-", stdin=Path(path).read_bytes())
    assert code == 0 and "default_device_sampler_generator" in out
    code, out = invoke("explain", path, "--json")
    matches = json.loads(out)["matches"]
    assert matches[0]["id"] == "default_device_sampler_generator"
    assert {"id", "score", "mechanism", "fix"} <= set(matches[0])
    assert matches == sorted(matches, key=lambda m: -m["score"])


def test_explain_no_match_says_so_and_exits_1() -> None:
    code, out = invoke("explain", "-", stdin=b"KeyError: 'label'\n")
    assert code == 1
    assert "No known device pitfall matches" in out and "devcheck doctor" in out
    code, out = invoke("explain", "-", "--json", stdin=b"")
    assert code == 1 and json.loads(out)["matches"] == []


def test_explain_binary_stdin() -> None:
    code, _ = invoke("explain", "-", stdin=bytes(range(256)) * 100)
    assert code == 1


def test_explain_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    code, out = invoke("explain", str(tmp_path / "missing.txt"))
    assert code == 2 and "cannot read" in out


def test_explain_list_show_never_import_torch() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from devcheck.cli import cli\n"
        "r = CliRunner()\n"
        f"assert r.invoke(cli, ['explain', {str(DATA / 'linux_no_driver.txt')!r}]).exit_code == 0\n"
        "assert r.invoke(cli, ['pitfalls', 'list']).exit_code == 0\n"
        "assert r.invoke(cli, ['pitfalls', 'show', 'no_driver']).exit_code == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _machine(**over: object) -> MachineFacts:
    base: dict[str, object] = {"torch_installed": True, "cuda_build": "13.0",
                               "driver_cuda_version": None, "mps_capable": False, "fork": True,
                               "root": True, "linux": True}
    base.update(over)
    return MachineFacts(**base)  # type: ignore[arg-type]


def test_explain_adds_this_machine_facts_for_machine_dependent_pitfalls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from devcheck.probe import devices

    monkeypatch.setattr(devices, "probe_machine", lambda: _machine())
    path = str(DATA / "linux_torch_load_cuda_checkpoint.txt")
    code, out = invoke("explain", path)
    assert code == 0 and "On this machine:" in out and "map_location='cpu'" in out
    code, out = invoke("explain", path, "--json")
    assert "no NVIDIA driver" in json.loads(out)["this_machine"]
    code, out = invoke("explain", path, "--no-here")
    assert "On this machine" not in out
    monkeypatch.setattr(devices, "probe_machine", lambda: _machine(cuda_build=None))
    assert "CPU-only torch build" in invoke("explain", path)[1]
    # not machine-dependent: nothing added
    code, out = invoke("explain", str(DATA / "learner_windows_notebook.txt"))
    assert "On this machine" not in out


def test_list_marks_machine_dependent_pitfalls(monkeypatch: pytest.MonkeyPatch) -> None:
    from devcheck.probe import devices

    monkeypatch.setattr(devices, "probe_machine", lambda: _machine(driver_cuda_version=13000))
    rows = {r["id"]: r for r in json.loads(invoke("pitfalls", "list", "--json")[1])
            ["pitfalls"]}
    assert rows["no_driver"] == {**rows["no_driver"], "reproducible_here": False,
                                 "here": "an NVIDIA driver is installed"}
    assert rows["mixed_devices"]["reproducible_here"] is True
    assert rows["cpu_only_wheel"]["here"] == "this torch build has CUDA"


def test_list_on_this_machine_uses_the_wheel_probe() -> None:
    """Facts come from probe_wheel (ast over torch/version.py), not a regex of our own."""
    from devcheck.probe.devices import probe_machine
    from devcheck.probe.wheel import probe_wheel

    assert probe_machine().cuda_build == probe_wheel().cuda_version


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5", "0", "1e12", "soon"])
def test_run_rejects_a_timeout_that_is_not_a_finite_positive_number(value: str) -> None:
    code, out = invoke("pitfalls", "run", "numpy_on_requires_grad", "--timeout", value)
    assert code == 2
    error = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "--timeout" in error[0] and "(0, 86400]" in error[0]
    assert "Traceback" not in out


@pytest.mark.parametrize("value", ["cuda:-1", "cuda:x", "cuda:", "tpu", "CUDA", "cuda:0:1",
                                   " cpu"])
def test_run_rejects_a_device_that_is_not_one(value: str) -> None:
    code, out = invoke("pitfalls", "run", "numpy_on_requires_grad", "--device", value)
    assert code == 2
    error = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and repr(value) in error[0] and "cuda:N" in error[0]


def test_run_reports_a_timeout_with_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import lab_probes

    monkeypatch.setitem(REGISTRY, lab_probes.HANGS.id, lab_probes.HANGS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(TESTS), os.environ.get("PYTHONPATH")])))
    code, out = invoke("pitfalls", "run", lab_probes.HANGS.id, "--device", "cpu",
                       "--timeout", "0.5")
    assert code == 1
    assert "  reproduce  timed out after 0.5 s (the --timeout limit per phase)" in out
    assert "FAILED: reproduce timed out after 0.5 s" in out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the zygote lab needs fork")
def test_run_all_with_a_torch_that_kills_the_lab_says_why_once_in_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table cuts each reason at 110 characters, before the step and the fix: the
    lab's failure is printed once, whole, after it."""
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import os, sys\nsys.stderr.write('bye\\n')\nos._exit(7)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(tmp_path), os.environ.get("PYTHONPATH")])))
    code, out = invoke("pitfalls", "run", "--all", "--device", "cpu")
    assert code == 1
    why = ("the lab process (python -m devcheck.pitfalls.lab --serve) failed to start: it "
           "exited with code 7 while importing torch (its last words: bye); `devcheck doctor` "
           "explains a broken torch")
    assert out.splitlines().count(why) == 1, out
    assert f"0 passed, 0 skipped, {len(REGISTRY)} failed" in out


def test_run_help_states_the_labs_start_margin() -> None:
    from devcheck.pitfalls.lab.parent import _START_MARGIN_S

    code, out = invoke("pitfalls", "run", "--help")
    assert code == 0 and f"gets as long plus {_START_MARGIN_S:g} s" in " ".join(out.split())


def test_show_lists_related_pitfalls() -> None:
    p = next(p for p in REGISTRY.values() if p.related)
    code, out = invoke("pitfalls", "show", p.id)
    assert code == 0
    for other in p.related:
        assert f"See also:  devcheck pitfalls show {other}   ({REGISTRY[other].title})" in out
    assert json.loads(invoke("pitfalls", "show", p.id, "--json")[1])["related"] == \
        list(p.related)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_an_interrupted_sweep_reports_what_finished_and_exits_130(
        monkeypatch: pytest.MonkeyPatch, as_json: bool) -> None:
    from devcheck import pitfalls
    from devcheck.pitfalls import lab

    done = lab.RunResult(id="numpy_on_requires_grad", device="cpu", status="passed",
                         reason="reproduced it; fixed: ok")

    def run_pitfall(the_lab: object, pitfall_id: str, *args: object) -> lab.RunResult:
        if pitfall_id == "numpy_on_requires_grad":
            return done
        raise KeyboardInterrupt  # Ctrl-C while the next one runs

    monkeypatch.setattr(lab, "run_pitfall", run_pitfall)
    ids = list(REGISTRY)
    nxt = ids[ids.index("numpy_on_requires_grad") + 1]
    monkeypatch.setattr(pitfalls, "all_pitfalls", lambda: [REGISTRY["numpy_on_requires_grad"],
                                                           REGISTRY[nxt]])
    result = CliRunner().invoke(cli, ["pitfalls", "run", "--all", "--device", "cpu",
                                      *(["--json"] if as_json else [])])
    assert result.exit_code == 130
    stderr = result.stderr.strip().splitlines()
    assert stderr == [f"devcheck pitfalls run: stopped by SIGINT while running {nxt} "
                      "(1 of 2 finished); its processes were killed, nothing is left running"]
    if as_json:
        doc = json.loads(result.stdout)
        assert [r["id"] for r in doc["results"]] == ["numpy_on_requires_grad"]
        assert doc["interrupted"] == {"signal": "SIGINT", "while_running": nxt}
        assert doc["summary"]["passed"] == 1
    else:
        assert "numpy_on_requires_grad" in result.stdout and "1 passed" in result.stdout


def test_run_with_a_bad_lab_mode_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVCHECK_LAB_MODE", "bogus")
    result = CliRunner().invoke(cli, ["pitfalls", "run", "numpy_on_requires_grad"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: lab mode 'bogus' (DEVCHECK_LAB_MODE or mode=) is not one; expected 'fork' or "
        "'spawn'; unset it to use the default"]
