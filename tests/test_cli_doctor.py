"""``devcheck doctor`` / ``devcheck gpus`` through click's CliRunner, in every scenario."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
)

from devcheck.cli import cli
from devcheck.facts import TorchFacts, WheelFacts
from devcheck.probe import torchenv, wheel

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
                  "no NVIDIA driver"),
    "driver_not_loaded": (fk.driver_not_loaded, torch_cpu_machine(), CU130_WHEEL, 0, 0,
                          "driver is not loaded"),
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
}


@pytest.fixture
def scenario(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    nvml_sc, torch_facts, wheel_facts, *_ = SCENARIOS[request.param]
    fk.install(monkeypatch, nvml_sc())
    monkeypatch.setattr(torchenv, "probe_torch", lambda **kw: torch_facts)
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
    doc = json.loads(result.output)
    assert result.exit_code == code == doc["summary"]["exit_code"]
    assert {f["severity"] for f in doc["findings"]} <= {"ok", "info", "warn", "error"}


@pytest.mark.parametrize("scenario", list(SCENARIOS), indirect=True)
def test_gpus_every_scenario(scenario) -> None:
    *_, gpus_code, _text = scenario
    result = run(["gpus", "--json"])
    doc = json.loads(result.output)
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
    doc = json.loads(result.output)
    assert result.exit_code == 1
    req = [f for f in doc["findings"] if f["id"] == "require_cuda"]
    assert req and req[0]["severity"] == "error" and req[0]["evidence"]
    # The answer gives the cause (the first real blocker), not the --require echo.
    assert "--require" not in doc["summary"]["answer"]
    assert req[0]["evidence"] in doc["summary"]["answer"]



@pytest.mark.parametrize("scenario", ["no_driver", "one_gpu"], indirect=True)
def test_require_mps_off_macos_gives_the_mps_reason_not_a_cuda_one(scenario) -> None:
    doc = json.loads(run(["doctor", "--require", "mps", "--json"]).output)
    req = next(f for f in doc["findings"] if f["id"] == "require_mps")
    assert req["severity"] == "error" and doc["summary"]["exit_code"] == 1
    assert "MPS is Apple-only" in req["evidence"], req
    assert "NVIDIA" not in req["evidence"] + (req["fix"] or "") and req["pitfall"] is None

def test_usage_errors_exit_2() -> None:
    assert run(["doctor", "--require", "cuda", "--no-live"]).exit_code == 2
    assert run(["doctor", "--require", "tpu"]).exit_code == 2
    assert run(["doctor", "--timeout", "0"]).exit_code == 2
    assert run(["gpus", "--bogus"]).exit_code == 2


def test_real_hung_torch_probe_via_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.library_missing())
    monkeypatch.setattr(torchenv, "collect_torch", lambda live: time.sleep(5))
    start = time.monotonic()
    result = run(["doctor", "--timeout", "0.3", "--json"])
    assert time.monotonic() - start < 4
    doc = json.loads(result.output)
    assert result.exit_code == 1 and "timed out after 0.3s" in doc["torch"]["error"]


def test_hung_nvml_still_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.hung_driver(seconds=8))
    monkeypatch.setattr(torchenv, "probe_torch", lambda **kw: torch_cpu_machine())
    result = run(["doctor", "--timeout", "0.5", "--json"])
    doc = json.loads(result.output)
    assert doc["nvml"]["error_kind"] == "timeout" and result.exit_code == 1


def test_bad_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.two_gpus())
    monkeypatch.setattr(torchenv, "probe_torch", lambda **kw: torch_cuda(1, capability="9.0"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,7")
    result = run(["doctor"])
    assert "CUDA_VISIBLE_DEVICES='0,7' is malformed" in result.output
    assert "index 7 does not exist" in result.output


def test_doctor_on_this_machine_for_real() -> None:
    result = run(["doctor", "--json"])
    doc = json.loads(result.output)
    assert doc["summary"]["usable_devices"][0] == "cpu"
    import torch

    if not torch.cuda.is_available() and not doc["nvml"]["available"]:
        ids = {f["id"] for f in doc["findings"]}
        assert "no_driver" in ids
        text = run(["doctor", "--no-color"]).output
        assert "no NVIDIA driver" in text
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
