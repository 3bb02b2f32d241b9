"""``devcheck doctor`` / ``devcheck gpus`` through click's CliRunner, in every scenario."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fakes import fake_pynvml as fk
from fakes.facts import (
    torch_cpu_machine,
    torch_cuda,
    torch_import_failed,
    torch_timed_out,
    use_torch,
)

from devcheck.cli import cli
from devcheck.facts import TorchFacts, WheelFacts
from devcheck.probe import wheel

REPO = Path(__file__).resolve().parents[1]

CPU_WHEEL = WheelFacts(installed=True, version="2.5.0+cpu", cpu_only=True, location="/x/torch")
CU130_WHEEL = WheelFacts(installed=True, version="2.14.1+cu130", cuda_version="13.0",
                         cpu_only=False, location="/x/torch")


def run(args: list[str]) -> Result:
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    assert "Traceback" not in result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


# name -> (pynvml scenario, torch facts, wheel facts, doctor exit code, gpus exit code, text)
SCENARIOS: dict[str, tuple[Callable[[], fk.Scenario], TorchFacts, WheelFacts, int, int, str]] = {
    "no_driver": (fk.library_missing, torch_cpu_machine(), CU130_WHEEL, 0, 0,
                  "no NVIDIA GPU on this machine: torch uses the CPU"),
    "driver_not_loaded": (fk.driver_not_loaded, torch_cpu_machine(), CU130_WHEEL, 0, 0,
                          "NVIDIA GPU on this machine"),
    "zero_gpus": (fk.no_gpus, torch_cpu_machine(reason="no CUDA-capable device is detected"),
                  CU130_WHEEL, 0, 0, "loaded but reports no GPU"),
    "one_gpu": (fk.one_gpu, torch_cuda(1), CU130_WHEEL, 0, 0, "cuda:0"),
    "two_gpus": (fk.two_gpus, torch_cuda(2, capability="9.0"), CU130_WHEEL, 0, 0, "nearly full"),
    "not_supported": (fk.not_supported_fields, torch_cuda(1), CU130_WHEEL, 0, 0, "n/a"),
    "lost_gpu": (fk.lost_gpu, torch_cuda(1), CU130_WHEEL, 1, 1, "GPU 1 is not usable"),
    "unknown_gpu_error": (lambda: fk.lost_gpu("NVMLError_Unknown"), torch_cuda(1), CU130_WHEEL,
                          1, 1, "NVMLError_Unknown"),
    "unknown_init_error": (lambda: fk.Scenario(init_error="NVMLError_Unknown"),
                           torch_cpu_machine(), CU130_WHEEL, 0, 0, "NVML failed"),
    "old_driver": (fk.old_driver, torch_cpu_machine(
        reason="The NVIDIA driver on your system is too old (found version 12040)."),
        CU130_WHEEL, 1, 1, "whl/cu124"),
    "cpu_only_wheel": (fk.one_gpu, torch_cpu_machine(cuda=None, version="2.5.0+cpu"), CPU_WHEEL,
                       1, 1, "CPU-only"),
    "arch_not_in_wheel": (lambda: fk.one_gpu(cc=(6, 1), name="NVIDIA GeForce GTX 1080"),
                          torch_cuda(1, ok=False, capability="6.1",
                                     error="CUDA error: no kernel image is available"),
                          CU130_WHEEL, 1, 0, "compute capability 6.1"),
    "torch_import_failure": (fk.one_gpu, torch_import_failed(), CU130_WHEEL, 1, 0,
                             "import torch failed"),
    "torch_hung": (fk.one_gpu, torch_timed_out(0.5), CU130_WHEEL, 1, 0, "timed out after 0.5s"),
    "torch_crashed": (fk.one_gpu, TorchFacts(import_error="the torch probe crashed with SIGSEGV "
                                                          "(signal 11) while importing torch"),
                      CU130_WHEEL, 1, 0, "import torch failed: the torch probe crashed"),
}


@pytest.fixture
def scenario(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    nvml_sc, torch_facts, wheel_facts, *_ = SCENARIOS[request.param]
    fk.install(monkeypatch, nvml_sc())
    use_torch(monkeypatch, torch_facts)
    monkeypatch.setattr(wheel, "probe_wheel", lambda: wheel_facts)
    return SCENARIOS[request.param]


@pytest.mark.parametrize("scenario", list(SCENARIOS), indirect=True)
def test_doctor_every_scenario(scenario) -> None:
    *_, code, _gpus_code, text = scenario
    result = run(["doctor", "--no-color"])
    assert result.exit_code == code, result.output
    assert text in result.output
    assert result.output.rstrip().endswith(f"exit {code}: "
                                           + ("error findings above" if code else
                                              "no error findings"))


@pytest.mark.parametrize("scenario", list(SCENARIOS), indirect=True)
def test_doctor_json_parses_in_every_scenario(scenario) -> None:
    *_, code, _gpus_code, _text = scenario
    result = run(["doctor", "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == code == doc["summary"]["exit_code"]
    assert {f["severity"] for f in doc["findings"]} <= {"ok", "info", "warn", "error"}


@pytest.mark.parametrize("scenario", list(SCENARIOS), indirect=True)
def test_gpus_every_scenario(scenario) -> None:
    *_, gpus_code, _text = scenario
    result = run(["gpus", "--json"])
    doc = json.loads(result.stdout)
    assert doc["torch"] is None and result.exit_code == gpus_code
    text = run(["gpus"])
    assert text.exit_code == gpus_code and text.output.startswith("GPUs:")


@pytest.mark.parametrize("scenario", ["one_gpu"], indirect=True)
def test_require_cuda_passes_with_a_live_gpu(scenario) -> None:
    result = run(["doctor", "--require", "cuda"])
    assert result.exit_code == 0 and "--require cuda: satisfied" in result.output


@pytest.mark.parametrize("scenario", ["no_driver", "arch_not_in_wheel", "zero_gpus"],
                         indirect=True)
def test_require_cuda_fails_without_a_live_gpu(scenario) -> None:
    result = run(["doctor", "--require", "cuda", "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 1
    req = [f for f in doc["findings"] if f["id"] == "require_cuda"]
    assert req and req[0]["severity"] == "error" and req[0]["evidence"]
    # The answer gives the cause (the first real blocker), not the --require echo.
    assert "--require" not in doc["summary"]["answer"]
    assert req[0]["evidence"] in doc["summary"]["answer"]



@pytest.mark.parametrize("scenario", ["no_driver", "one_gpu"], indirect=True)
def test_require_mps_off_macos_gives_the_mps_reason_not_a_cuda_one(scenario) -> None:
    doc = json.loads(run(["doctor", "--require", "mps", "--json"]).stdout)
    req = next(f for f in doc["findings"] if f["id"] == "require_mps")
    assert req["severity"] == "error" and doc["summary"]["exit_code"] == 1
    assert "MPS is Apple-only" in req["evidence"], req
    assert "NVIDIA" not in req["evidence"] + (req["fix"] or "") and req["pitfall"] is None

def test_usage_errors_exit_2() -> None:
    assert run(["doctor", "--require", "cuda", "--no-live"]).exit_code == 2
    assert run(["doctor", "--require", "tpu"]).exit_code == 2
    assert run(["doctor", "--timeout", "0"]).exit_code == 2
    assert run(["doctor", "--json", "--markdown"]).exit_code == 2
    assert run(["gpus", "--bogus"]).exit_code == 2


@pytest.mark.parametrize("value, said", [
    ("inf", "'inf' is not a finite number (expected one in (0, 3600])"),
    ("nan", "'nan' is not a finite number (expected one in (0, 3600])"),
    ("1e12", "1e+12 is outside (0, 3600]"),
    ("-5", "-5 is outside (0, 3600]"),
    ("soon", "'soon' is not a number"),
])
def test_timeout_must_be_finite_and_in_range(value: str, said: str) -> None:
    result = run(["doctor", "--timeout", value, "--json"])
    assert result.exit_code == 2 and said in result.output
    assert "Invalid value for '--timeout'" in result.output


def test_real_hung_torch_probe_via_timeout(tmp_path: Path) -> None:
    """A torch whose import hangs: --timeout ends it, and --json still prints JSON."""
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
    out = _doctor_process(["--timeout", "2", "--json"], tmp_path)
    doc = json.loads(out.stdout)
    assert out.returncode == 1 == doc["summary"]["exit_code"]
    # "while importing torch" unless a loaded machine had not even started the child's Python
    assert doc["torch"]["error"].startswith("torch probe timed out after 2s")
    assert any(f["id"] == "torch_probe_failed" for f in doc["findings"])


def _doctor_process(args: list[str], fake_torch_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**__import__("os").environ, "PYTHONPATH": f"{fake_torch_dir}:{REPO}",
           "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "devcheck", "doctor", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("body, said", [
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
     "crashed with SIGSEGV (signal 11) while importing torch"),
    ("import os\nos._exit(3)\n", "exited with code 3 before reporting while importing torch"),
])
def test_a_torch_that_kills_the_interpreter_is_a_finding_and_json_still_prints(
        tmp_path: Path, body: str, said: str) -> None:
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(body)
    out = _doctor_process(["--json"], tmp_path)
    assert "Traceback" not in out.stderr
    doc = json.loads(out.stdout)
    assert out.returncode == 1 == doc["summary"]["exit_code"]
    failed = next(f for f in doc["findings"] if f["id"] == "torch_import_failed")
    assert said in failed["title"] and said in doc["torch"]["import_error"]
    assert doc["wheel"]["installed"] is True  # the fake's files: found, just broken
    text = _doctor_process([], tmp_path)
    assert text.returncode == 1 and said in text.stdout.splitlines()[0]


def test_closed_stdout_is_one_line_on_stderr() -> None:
    for command in (["doctor", "--no-live"], ["gpus"]):
        out = subprocess.run([sys.executable, "-m", "devcheck", *command],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             timeout=120, preexec_fn=lambda: __import__("os").close(1))
        assert out.returncode == 1, out.stderr
        assert out.stderr == ("Error: cannot print the report: stdout is closed; rerun with "
                              "stdout open, e.g. `devcheck doctor > report.txt`\n")


def test_markdown_report(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.two_gpus())
    use_torch(monkeypatch, torch_cuda(2, capability="9.0"))
    result = run(["doctor", "--markdown"])
    assert result.exit_code == 0 and result.output.startswith("### devcheck doctor")
    assert "| GPUs | 0: NVIDIA H100 80GB HBM3 (CC 9.0), 1: NVIDIA H100 80GB HBM3" in result.output
    assert "<details>" in result.output and "\x1b[" not in result.output
    forced = CliRunner().invoke(cli, ["gpus", "--markdown", "--color"], color=True)
    assert forced.output.startswith("### devcheck gpus") and "\x1b[" not in forced.output


def test_hung_nvml_still_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.hung_driver(seconds=8))
    use_torch(monkeypatch, torch_cpu_machine())
    result = run(["doctor", "--timeout", "0.5", "--json"])
    doc = json.loads(result.stdout)
    assert doc["nvml"]["error_kind"] == "timeout" and result.exit_code == 1


def test_bad_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.two_gpus())
    use_torch(monkeypatch, torch_cuda(1, capability="9.0"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,7")
    result = run(["doctor"])
    assert "CUDA_VISIBLE_DEVICES='0,7' is malformed" in result.output
    assert "index 7 does not exist" in result.output


def test_doctor_on_this_machine_for_real() -> None:
    result = run(["doctor", "--json"])
    doc = json.loads(result.stdout)
    assert doc["summary"]["usable_devices"][0] == "cpu"
    import torch

    if not torch.cuda.is_available() and not doc["nvml"]["available"]:
        ids = {f["id"] for f in doc["findings"]}
        assert "no_driver" in ids
        text = run(["doctor", "--no-color"]).output
        assert "NVIDIA" in text.splitlines()[0]
        if torch.version.cuda:
            assert f"CUDA {torch.version.cuda}" in text


def test_gpus_never_imports_torch() -> None:
    code = ("import sys\nfrom devcheck.cli import cli\n"
            "try:\n    cli(['gpus', '--json'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('NO_TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout[: out.stdout.rindex("NO_TORCH")])
    assert doc["command"] == "gpus" and doc["wheel"]["installed"] is True


def test_console_script_json_exit_code() -> None:
    out = subprocess.run([sys.executable, "-m", "devcheck", "gpus", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert "Traceback" not in out.stderr
    assert out.returncode == json.loads(out.stdout)["summary"]["exit_code"]



@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("args", [["gpus"], ["gpus", "--json"]])
def test_unwritable_stdout_is_a_clean_error_not_a_traceback(args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "devcheck", *args], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=60)
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr
    assert out.returncode == 1
    assert "could not write the report" in out.stderr and "No space left" in out.stderr

@pytest.mark.parametrize("scenario", ["no_driver"], indirect=True)
def test_colour_only_on_a_tty_or_when_forced(scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "\x1b[" not in run(["doctor"]).output  # CliRunner's stdout is not a TTY
    forced = CliRunner().invoke(cli, ["doctor", "--color"], color=True)
    assert "\x1b[" in forced.output
    monkeypatch.setenv("NO_COLOR", "1")
    from devcheck.cli import doctor as cli_doctor

    assert cli_doctor._use_color(None) is False and cli_doctor._use_color(True) is True


@pytest.mark.parametrize("scenario", ["no_driver"], indirect=True)
def test_require_prints_the_fix_once(scenario) -> None:
    out = run(["doctor", "--require", "cuda", "--no-color"]).output
    assert out.count("nothing to fix for the CPU") == 1
    assert "fix: see the fix of `no_driver` below" in out
    assert out.count("NVMLError_LibraryNotFound") == 1  # the raw error: facts section only


def test_doctor_itself_never_imports_torch() -> None:
    """torch is imported in the probe's child only: the doctor's process stays torch-free."""
    code = ("import sys\nfrom devcheck.cli import cli\n"
            "try:\n    cli(['doctor', '--json'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('NO_TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout[: out.stdout.rindex("NO_TORCH")])
    assert doc["torch"]["imported"] is True and doc["summary"]["usable_devices"][0] == "cpu"


def test_unmet_require_is_one_line_on_stderr() -> None:
    out = subprocess.run([sys.executable, "-m", "devcheck", "doctor", "--require", "cuda",
                          "--json"], capture_output=True, text=True, timeout=300)
    import torch

    if torch.cuda.is_available():
        pytest.skip("Requires: a machine without CUDA")
    assert out.returncode == 1 and json.loads(out.stdout)["summary"]["exit_code"] == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("Error: --require cuda: no CUDA device passed the live check (")


def test_ctrl_c_is_an_interrupt_not_click_aborted(tmp_path: Path) -> None:
    """click turned Ctrl-C into "Aborted!" and exit 1, which the doctor uses for "error
    findings"; an interrupt is 130, as in a shell, and says so."""
    import os
    import signal
    import time

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-m", "devcheck", "doctor"],
                            env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # inside the torch probe's wait
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "devcheck doctor: interrupted" in err
    assert "Aborted!" not in err and "Traceback" not in err
