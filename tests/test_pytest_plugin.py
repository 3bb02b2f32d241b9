"""The pytest plugin, driven through ``pytester`` on faked machines.

Hardware is faked at the boundary (``devcheck.probe.nvml.collect_nvml``,
``devcheck.probe.torchproc.torch_job``, ``devcheck.probe.host.probe_host``,
``devcheck.probe.wheel.probe_wheel``) and the inner runs are in-process, so the patches reach
doctor. Inner runs load the plugin with ``-p no:devcheck -p devcheck.integrations.pytest_plugin``:
the same module exactly once whether or not the ``pytest11`` entry point is installed.
Expected reasons and findings are written out by hand for each faked machine (an oracle
independent of doctor's code), so a change in doctor's wording shows up here as a diff.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from devcheck.facts import (
    DeviceAvailability,
    Finding,
    GpuFacts,
    HostFacts,
    LiveCheck,
    NvmlFacts,
    TorchDevice,
    TorchFacts,
    WheelFacts,
)
from devcheck.integrations import pytest_plugin
from devcheck.probe import host, nvml, torchproc, wheel
from devcheck.probe.deadline import Job
from devcheck.render import json as _json  # noqa: F401

# Imported before any inner run: pytester restores sys.modules after each in-process run,
# and a module first imported inside one would be dropped, together with our patches.
from devcheck.rules import diagnose, require  # noqa: F401

# In-process runs register the already-imported module object (plugins=[...]); subprocess
# runs import it by name. Either way "no:devcheck" keeps the entry point from adding it twice.
LOAD = ("-p", "no:devcheck", "-p", "no:cacheprovider")
LOAD_BY_NAME = (*LOAD, "-p", "devcheck.integrations.pytest_plugin")
A100 = "NVIDIA A100-SXM4-80GB"

HOST = HostFacts(os_name="Linux", machine="x86_64", python_version="3.11.7", cpu_logical=16)
WHEEL = WheelFacts(installed=True, version="2.5.1+cu124", cuda_version="12.4", cpu_only=False)
NO_DRIVER = NvmlFacts(
    available=False,
    error="NVML Shared Library Not Found: libnvidia-ml.so.1: cannot open shared object file",
    error_kind="library_not_found",
)
TORCH_NO_CUDA = TorchFacts(
    imported=True, version="2.5.1+cu124", cuda_version="12.4", cudnn_version=90100,
    arch_list=("sm_50", "sm_80", "sm_90"), cuda_available=False, default_device="cpu",
    live_checks=(LiveCheck(device="cpu", ok=True, seconds=0.01, max_abs_error=0.0),),
)
TWO_GPUS = NvmlFacts(
    available=True, driver_version="550.54.15", cuda_driver_version="12.4",
    gpus=tuple(
        GpuFacts(index=i, name=A100, uuid=f"GPU-{i}", compute_capability="8.0",
                 memory_total_bytes=80 * 2**30, memory_used_bytes=2**20,
                 memory_free_bytes=80 * 2**30 - 2**20)
        for i in range(2)
    ),
)
TORCH_TWO_GPUS = TorchFacts(
    imported=True, version="2.5.1+cu124", cuda_version="12.4", cudnn_version=90100,
    arch_list=("sm_50", "sm_80", "sm_90"), cuda_available=True, device_count=2,
    devices=tuple(TorchDevice(index=i, name=A100, capability="8.0",
                              memory_total_bytes=80 * 2**30) for i in range(2)),
    default_device="cpu",
    live_checks=(
        LiveCheck(device="cpu", ok=True, seconds=0.01, max_abs_error=0.0),
        LiveCheck(device="cuda:0", ok=True, seconds=0.2, max_abs_error=1e-6),
        LiveCheck(device="cuda:1", ok=True, seconds=0.2, max_abs_error=1e-6),
    ),
)
# NVML still lists the GPU, but it no longer computes: the runner that "lost" its GPU.
TORCH_GPU_LOST = TorchFacts(
    imported=True, version="2.5.1+cu124", cuda_version="12.4", cuda_available=False,
    cuda_unavailable_reason="CUDA unknown error - this may be due to an incorrectly set up "
    "environment, e.g. changing env variable CUDA_VISIBLE_DEVICES after program start.",
    default_device="cpu",
    live_checks=(LiveCheck(device="cpu", ok=True, seconds=0.01, max_abs_error=0.0),),
)

TESTS = """
import pytest

def test_each(device):
    assert device in ("cpu", "cuda:0", "cuda:1", "mps")

@pytest.mark.requires_cuda
def test_cuda():
    pass

@pytest.mark.requires_mps
def test_mps():
    pass

@pytest.mark.gpu(min_count=2)
def test_two():
    pass

@pytest.mark.gpu(min_count=3)
def test_three():
    pass

def test_plain():
    pass
"""


# The oracle, by hand: what doctor must conclude on each faked machine (HOST has no PCI facts).
NO_DRIVER_REASON = "no NVIDIA driver: torch uses the CPU"
NO_DRIVER_BLOCKING = ["[warn] no_driver: no NVIDIA driver: torch uses the CPU"]
GPU_LOST_REASON = "NVML sees 1 GPU(s) but torch cannot use them"
GPU_LOST_BLOCKING = ["[error] torch_cannot_use_gpu: NVML sees 1 GPU(s) but torch cannot use them"]
MPS_REASON = "MPS is Apple-only (this is Linux)"


class Machine:
    """A faked machine; counts how often torch was asked (the expensive probe)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.torch_probes = 0
        self.nvml_facts = NO_DRIVER
        self.torch_facts = TORCH_NO_CUDA

    def install(self, nvml_facts: NvmlFacts, torch_facts: TorchFacts) -> Machine:
        self.nvml_facts, self.torch_facts = nvml_facts, torch_facts

        def torch_job(*, live: bool = True, isolate: bool = True) -> Job[TorchFacts]:
            self.torch_probes += 1
            return Job("torch probe", lambda: self.torch_facts, lambda why: TorchFacts())

        mp = self.monkeypatch
        mp.setattr(nvml, "collect_nvml", lambda ignore_pids=(): self.nvml_facts)
        mp.setattr(torchproc, "torch_job", torch_job)
        mp.setattr(host, "probe_host", lambda: HOST)
        mp.setattr(wheel, "probe_wheel", lambda: WHEEL)
        return self


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    return Machine(monkeypatch)


@pytest.fixture
def cpu_machine(machine: Machine) -> Machine:
    return machine.install(NO_DRIVER, TORCH_NO_CUDA)


@pytest.fixture
def gpu_machine(machine: Machine) -> Machine:
    return machine.install(TWO_GPUS, TORCH_TWO_GPUS)


def outcomes(pytester: pytest.Pytester, *args: str) -> dict[str, tuple[str, str]]:
    """nodeid -> (outcome, skip reason or "") of an in-process run, via its reports."""
    reprec = pytester.inline_run(*LOAD, *args, plugins=[pytest_plugin])
    result: dict[str, tuple[str, str]] = {}
    for rep in reprec.getreports("pytest_runtest_logreport"):
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            reason = rep.longrepr[2] if rep.skipped and isinstance(rep.longrepr, tuple) else ""
            reason = str(reason).removeprefix("Skipped: ")
            result[rep.nodeid.split("::")[-1]] = (rep.outcome, reason)
    return result


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*LOAD, *args, plugins=[pytest_plugin])


# ---------------------------------------------------------------- the device fixture


def test_device_fixture_on_a_cpu_only_machine(pytester: pytest.Pytester, cpu_machine: Machine):
    pytester.makepyfile(TESTS)
    got = outcomes(pytester)
    assert [n for n in got if n.startswith("test_each")] == ["test_each[cpu]"]
    assert got["test_each[cpu]"][0] == "passed"
    assert cpu_machine.torch_probes == 1  # once per session, however many tests ask


def test_device_fixture_on_a_faked_two_gpu_machine(
    pytester: pytest.Pytester, gpu_machine: Machine
):
    pytester.makepyfile(TESTS)
    result = run(pytester, "-v")
    result.stdout.re_match_lines([
        r".*test_each\[cpu\] PASSED.*",
        r".*test_each\[cuda:0\] PASSED.*",
        r".*test_each\[cuda:1\] PASSED.*",
    ])
    assert gpu_machine.torch_probes == 1


def test_a_projects_own_device_fixture_or_parametrize_is_left_alone(
    pytester: pytest.Pytester, gpu_machine: Machine
):
    pytester.makeconftest(
        "import pytest\n@pytest.fixture\ndef device():\n    return 'mine'\n"
    )
    pytester.makepyfile(
        "import pytest\n"
        "def test_own(device):\n    assert device == 'mine'\n"
        "@pytest.mark.parametrize('device', ['x'])\n"
        "def test_param(device):\n    assert device == 'x'\n"
    )
    got = outcomes(pytester)
    assert got == {"test_own": ("passed", ""), "test_param[x]": ("passed", "")}
    assert gpu_machine.torch_probes == 0


# ---------------------------------------------------------------- markers and skip reasons


def test_cpu_machine_skips_gpu_tests_with_doctors_reason(
    pytester: pytest.Pytester, cpu_machine: Machine
):
    pytester.makepyfile(TESTS)
    got = outcomes(pytester)
    assert got["test_cuda"] == ("skipped", f"Requires CUDA: {NO_DRIVER_REASON}")
    assert got["test_two"] == ("skipped", f"Requires 2 GPUs: {NO_DRIVER_REASON}")
    assert got["test_mps"] == ("skipped", f"Requires MPS: {MPS_REASON}")
    assert got["test_plain"] == ("passed", "")
    for _, reason in got.values():
        assert reason.lower() not in ("no gpu", "requires cuda: no gpu")


def test_two_gpu_machine_runs_gpu_tests_and_counts_them(
    pytester: pytest.Pytester, gpu_machine: Machine
):
    pytester.makepyfile(TESTS)
    got = outcomes(pytester)
    assert got["test_cuda"] == ("passed", "")
    assert got["test_two"] == ("passed", "")
    assert got["test_three"] == ("skipped", "Requires 3 GPUs: only 2 usable (cuda:0, cuda:1)")


def test_gpu_listed_by_nvml_but_not_computing_is_not_usable(
    pytester: pytest.Pytester, machine: Machine
):
    machine.install(dataclasses.replace(TWO_GPUS, gpus=TWO_GPUS.gpus[:1]), TORCH_GPU_LOST)
    pytester.makepyfile(TESTS)
    got = outcomes(pytester)
    assert got["test_cuda"] == ("skipped", f"Requires CUDA: {GPU_LOST_REASON}")
    assert got["test_each[cpu]"] == ("passed", "") and "test_each[cuda:0]" not in got


def test_a_bad_min_count_fails_the_test_with_the_fix(
    pytester: pytest.Pytester, gpu_machine: Machine
):
    pytester.makepyfile(
        "import pytest\n@pytest.mark.gpu(min_count=0)\ndef test_bad():\n    pass\n"
    )
    result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*min_count must be a positive integer, got 0*min_count=2*"])


def test_markers_are_registered_for_strict_markers(
    pytester: pytest.Pytester, cpu_machine: Machine
):
    pytester.makepyfile(TESTS)
    result = run(pytester, "--strict-markers", "--only-cpu")
    assert result.ret == pytest.ExitCode.OK
    result = run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.gpu*", "@pytest.mark.requires_cuda*",
                                 "@pytest.mark.requires_mps*"])


# ---------------------------------------------------------------- the gate


@pytest.mark.parametrize(
    "scenario, reason, blocking",
    [((NO_DRIVER, TORCH_NO_CUDA), NO_DRIVER_REASON, NO_DRIVER_BLOCKING),
     ((dataclasses.replace(TWO_GPUS, gpus=TWO_GPUS.gpus[:1]), TORCH_GPU_LOST), GPU_LOST_REASON,
      GPU_LOST_BLOCKING)],
    ids=["no-driver", "gpu-lost"],
)
def test_require_cuda_fails_at_start_with_the_reason(
    pytester: pytest.Pytester, machine: Machine, scenario: tuple[NvmlFacts, TorchFacts],
    reason: str, blocking: list[str]
):
    machine.install(*scenario)
    pytester.makepyfile("def test_never_collected():\n    raise AssertionError('ran')\n")
    result = run(pytester, "--devcheck-require", "cuda")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "--devcheck-require cuda: no CUDA device passed the live check" in out
    assert f"reason: {reason}" in out
    shown = [line.strip() for line in out.splitlines() if line.strip().startswith("[")]
    assert shown == blocking  # errors and warnings only, each once
    assert "collected" not in out and "ran" not in out.split("reason:")[0]
    assert result.parseoutcomes().get("passed", 0) == 0
    assert machine.torch_probes == 1


def test_require_cuda_passes_on_the_two_gpu_machine(
    pytester: pytest.Pytester, gpu_machine: Machine
):
    pytester.makepyfile(TESTS)
    result = run(pytester, "--devcheck-require", "cuda")
    assert result.ret == pytest.ExitCode.OK
    assert result.parseoutcomes()["passed"] == 6  # 3 devices + cuda + two; three/mps skip


def test_gate_message_lists_findings() -> None:
    finding = Finding(id="nvml.no_driver", severity="error", title="No NVIDIA driver",
                      evidence="libnvidia-ml.so.1 not found", fix="Install the driver")
    a = DeviceAvailability(usable=("cpu",), cuda_reason="no NVIDIA driver", findings=(finding,))
    lines = pytest_plugin.gate_failure("cuda", a)
    assert lines is not None
    info = Finding(id="num_workers", severity="info", title="use num_workers <= 2", evidence="")
    warn = Finding(id="no_driver", severity="warn", title="no NVIDIA driver", evidence="e")
    chosen = pytest_plugin.gate_failure("cuda", a, [info, warn])
    assert chosen is not None and "  [warn] no_driver: no NVIDIA driver" in chosen
    assert not any("num_workers" in line for line in chosen)
    assert lines[1] == "  reason: no NVIDIA driver"
    assert "  [error] nvml.no_driver: No NVIDIA driver" in lines
    assert "      fix: Install the driver" in lines
    assert pytest_plugin.gate_failure("cuda", DeviceAvailability(usable=("cpu", "cuda:0"))) is None
    assert pytest_plugin.gate_failure("mps", a) is not None


# ---------------------------------------------------------------- selecting per runner


def test_only_gpu_on_the_two_gpu_machine(pytester: pytest.Pytester, gpu_machine: Machine):
    pytester.makepyfile(TESTS)
    got = outcomes(pytester, "--only-gpu")
    assert set(got) == {"test_each[cuda:0]", "test_each[cuda:1]", "test_cuda", "test_mps",
                        "test_two", "test_three"}
    assert got["test_each[cuda:1]"] == ("passed", "")


def test_only_gpu_on_a_cpu_machine_skips_with_reasons(
    pytester: pytest.Pytester, cpu_machine: Machine
):
    reason = NO_DRIVER_REASON
    pytester.makepyfile(TESTS)
    got = outcomes(pytester, "--only-gpu")
    assert "test_plain" not in got and "test_each[cpu]" not in got
    kind = "mps" if sys.platform == "darwin" else "cuda"
    outcome, why = got[f"test_each[{kind}]"]
    assert outcome == "skipped" and why.startswith("Requires a GPU: ") and reason in why
    assert all(outcome == "skipped" for outcome, _ in got.values())


def test_only_cpu_never_probes_torch(pytester: pytest.Pytester, gpu_machine: Machine):
    pytester.makepyfile(TESTS)
    got = outcomes(pytester, "--only-cpu")
    assert got == {"test_each[cpu]": ("passed", ""), "test_plain": ("passed", "")}
    assert gpu_machine.torch_probes == 0


def test_only_gpu_and_only_cpu_together_is_a_usage_error(
    pytester: pytest.Pytester, cpu_machine: Machine
):
    pytester.makepyfile(TESTS)
    result = run(pytester, "--only-gpu", "--only-cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--only-gpu and --only-cpu were both given; pick one*"])


# ---------------------------------------------------------------- the header line and JSON


def devcheck_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("devcheck: ")]


def test_header_line_after_the_live_check(pytester: pytest.Pytester, gpu_machine: Machine):
    pytester.makepyfile(TESTS)
    result = run(pytester, "--devcheck-require", "cuda")
    assert devcheck_lines(result) == [
        f"devcheck: torch 2.5.1+cu124, CUDA runtime 12.4, GPUs: 2 x {A100}; "
        "device fixture: cpu, cuda:0, cuda:1 (live-checked)"]


def test_header_line_is_cheap_when_nothing_asked(pytester: pytest.Pytester, gpu_machine: Machine):
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = run(pytester)
    assert devcheck_lines(result) == [
        f"devcheck: torch 2.5.1+cu124, CUDA runtime 12.4, GPUs: 2 x {A100}; "
        "devices live-checked on first use"
    ]
    assert gpu_machine.torch_probes == 0


@pytest.mark.parametrize("args, fixture_line", [
    ((), "devcheck: device fixture: cpu, cuda:0, cuda:1 (live-checked)"),
    (("--only-cpu",), "devcheck: device fixture: cpu (--only-cpu)"),
])
def test_collection_names_the_device_fixtures_devices(
    pytester: pytest.Pytester, gpu_machine: Machine, args: tuple[str, ...], fixture_line: str
):
    pytester.makepyfile(TESTS)
    lines = devcheck_lines(run(pytester, *args))
    assert lines[0].endswith("devices live-checked on first use") and lines[1:] == [fixture_line]


def test_only_gpu_header_names_the_gpus_only(pytester: pytest.Pytester, gpu_machine: Machine):
    pytester.makepyfile(TESTS)
    (line,) = devcheck_lines(run(pytester, "--only-gpu"))
    assert line.endswith("; device fixture: cuda:0, cuda:1 (live-checked) (--only-gpu)")


def test_device_fixture_line_on_a_cpu_machine(pytester: pytest.Pytester, cpu_machine: Machine):
    pytester.makepyfile("def test_each(device):\n    pass\n")
    lines = devcheck_lines(run(pytester))
    assert lines[1:] == ["devcheck: device fixture: cpu (live-checked)"]


def test_header_line_texts() -> None:
    a = DeviceAvailability(usable=("cpu",), cuda_reason="this torch build is CPU-only (2.5.0+cpu)",
                           torch_version="2.5.0+cpu")
    assert pytest_plugin.header_line(a) == (
        "devcheck: torch 2.5.0+cpu, no CUDA runtime, GPUs: none (this torch build is CPU-only "
        "(2.5.0+cpu)); device fixture: cpu (live-checked)"
    )
    mixed = DeviceAvailability(usable=("cpu", "cuda:0", "cuda:1", "cuda:2"), torch_version="2.4.0",
                               cuda_version="12.1", gpu_names=("NVIDIA A100", "NVIDIA T4",
                                                               "NVIDIA A100"))
    assert "GPUs: 2 x NVIDIA A100, NVIDIA T4;" in pytest_plugin.header_line(mixed)
    cheap = pytest_plugin.cheap_header_line(WheelFacts(installed=True, version="2.5.0+cpu",
                                                       cpu_only=True), NO_DRIVER)
    assert cheap.startswith("devcheck: torch 2.5.0+cpu, CPU-only build, GPUs: none (NVML: NVML ")
    assert pytest_plugin.cheap_header_line(WheelFacts(), NO_DRIVER).startswith(
        "devcheck: torch not installed, no CUDA runtime")


CPU_MACHINE_AVAILABILITY = {
    "usable": ["cpu"], "cuda_reason": NO_DRIVER_REASON, "mps_reason": MPS_REASON,
    "torch_version": "2.5.1+cu124", "cuda_version": "12.4", "gpu_names": [], "findings": [],
}


def test_json_report_where_asked(
    pytester: pytest.Pytester, cpu_machine: Machine, tmp_path: Path
):
    pytester.makepyfile(TESTS)
    target = tmp_path / "devcheck.json"
    result = run(pytester, "--devcheck-json", str(target))
    assert result.ret == pytest.ExitCode.OK
    data = json.loads(target.read_text())
    assert data["schema"] == "devcheck.pytest/2" and data["exitstatus"] == 0
    assert data["availability"] == CPU_MACHINE_AVAILABILITY
    assert {s["nodeid"].split("::")[-1] for s in data["skips"]} == {
        "test_cuda", "test_mps", "test_two", "test_three"}
    doctor_json = data["doctor"]  # doctor's own documented document (docs/doctor.md)
    assert doctor_json["nvml"]["error_kind"] == "library_not_found"
    assert doctor_json["summary"]["cuda_usable"] == [] and doctor_json["schema_version"] == 2
    assert [(f["id"], f["severity"]) for f in doctor_json["findings"]] == [
        ("no_driver", "warn"), ("num_workers", "info"), ("cpu_ok", "ok")]
    assert cpu_machine.torch_probes == 1  # one probe gives both the facts and the availability


@pytest.mark.parametrize("where", ["directory", "missing_parent", "read_only", "proc", "dev_full"])
def test_json_report_that_cannot_be_written_is_one_line_and_keeps_the_exit_code(
    pytester: pytest.Pytester, cpu_machine: Machine, tmp_path: Path, where: str
):
    if where == "dev_full" and not Path("/dev/full").exists():
        pytest.skip("Requires: /dev/full (Linux)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if where == "read_only" and __import__("os").access(locked, __import__("os").W_OK):
        pytest.skip("Requires: a non-root user (root writes into a read-only directory)")
    target = {"directory": tmp_path, "missing_parent": tmp_path / "nonexistent" / "x.json",
              "read_only": locked / "x.json", "proc": Path("/proc/devcheck.json"),
              "dev_full": Path("/dev/full")}[where]
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester, "--devcheck-json", str(target))
    assert result.ret == pytest.ExitCode.OK  # the tests passed: so does the run
    out = result.stdout.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out
    errors = [line for line in out.splitlines() if "cannot write --devcheck-json report" in line]
    assert errors and all(str(target) in line for line in errors)
    assert not (tmp_path / "nonexistent").exists()  # a typo never creates directories
    assert list(tmp_path.glob("**/.*.tmp*")) == []


def test_json_report_records_skips_under_xdist(
    pytester: pytest.Pytester, tmp_path: Path
):
    pytest.importorskip("xdist")
    target = tmp_path / "xdist.json"
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess(*LOAD_BY_NAME, "-p", "xdist", "-n", "2",
                                           "--devcheck-json", str(target))
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    data = json.loads(target.read_text())
    skipped = {s["nodeid"].split("::")[-1]: s["marker"] for s in data["skips"]}
    if "cuda:0" in data["availability"]["usable"]:
        pytest.skip("Requires: a machine without CUDA (the skips are the point)")
    assert skipped["test_cuda"] == "requires_cuda" and skipped["test_mps"] == "requires_mps"
    assert skipped["test_three"] == "gpu"


def test_json_report_is_written_when_the_gate_fails(
    pytester: pytest.Pytester, cpu_machine: Machine, tmp_path: Path
):
    target = tmp_path / "gate.json"
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester, "--devcheck-require", "cuda", "--devcheck-json", str(target))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    data = json.loads(target.read_text())
    assert data["require"] == "cuda" and data["availability"]["usable"] == ["cpu"]



def test_json_report_stays_strict_json_when_a_gpu_computes_nan(
    pytester: pytest.Pytester, machine: Machine, tmp_path: Path
):
    nan_check = LiveCheck(device="cuda:0", ok=False, seconds=0.2, max_abs_error=float("nan"),
                          error="matmul on cuda:0 differs from the CPU result by nan")
    broken = dataclasses.replace(TORCH_TWO_GPUS, live_checks=(
        TORCH_TWO_GPUS.live_checks[0], nan_check, TORCH_TWO_GPUS.live_checks[2]))
    machine.install(TWO_GPUS, broken)
    pytester.makepyfile("def test_x():\n    pass\n")
    target = tmp_path / "nan.json"
    assert run(pytester, "--devcheck-json", str(target)).ret == pytest.ExitCode.OK

    def reject(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    data = json.loads(target.read_text(), parse_constant=reject)
    checks = {c["device"]: c for c in data["doctor"]["torch"]["live_checks"]}
    assert checks["cuda:0"]["max_abs_error"] is None and not checks["cuda:0"]["ok"]
    assert data["availability"]["usable"] == ["cpu", "cuda:1"]

# ---------------------------------------------------------------- costs nothing when unused


NO_TORCH_CONFTEST = """
import sys

def pytest_unconfigure(config):
    with open("torch-imported.txt", "w") as f:
        f.write(str("torch" in sys.modules))
"""


@pytest.mark.parametrize(
    ("test_source", "args", "lines"),
    [
        ("def test_plain():\n    pass\n", (), 1),
        ("def test_each(device):\n    assert device == 'cpu'\n", ("--only-cpu",), 2),
    ],
    ids=["unused", "only-cpu"],
)
def test_no_torch_import_when_unused(
    pytester: pytest.Pytester, test_source: str, args: tuple[str, ...], lines: int
):
    pytester.makeconftest(NO_TORCH_CONFTEST)
    pytester.makepyfile(test_source)
    result = pytester.runpytest_subprocess(*LOAD_BY_NAME, *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert (pytester.path / "torch-imported.txt").read_text() == "False"
    assert len(devcheck_lines(result)) == lines  # the header (+ the device fixture's line)


# ---------------------------------------------------------------- on this machine, for real


def test_the_device_fixture_computes_on_each_usable_device(device: str) -> None:
    torch = pytest.importorskip("torch")
    x = torch.arange(6, dtype=torch.float32, device=device).reshape(2, 3)
    assert str(x.device).startswith(device.split(":")[0])
    assert (x @ x.T).cpu().tolist() == [[5.0, 14.0], [14.0, 50.0]]


@pytest.mark.requires_cuda
def test_the_gate_passes_on_this_cuda_machine(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_each(device):\n    assert device\n")
    result = pytester.runpytest_subprocess(*LOAD_BY_NAME, "--devcheck-require", "cuda", "-v")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.re_match_lines([r".*test_each\[cuda:0\] PASSED.*"])
    assert "(live-checked)" in devcheck_lines(result)[0]
    assert "device fixture: cpu, cuda:0" in devcheck_lines(result)[0]



def test_importing_the_plugin_imports_neither_torch_nor_pynvml() -> None:
    code = ("import sys, devcheck.integrations.pytest_plugin; "
            "print(sorted(m for m in ('torch', 'pynvml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e12", "soon"])
def test_devcheck_timeout_must_be_finite_and_in_range(
    pytester: pytest.Pytester, cpu_machine: Machine, value: str
):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester, "--devcheck-timeout", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--devcheck-timeout*"])
    assert cpu_machine.torch_probes == 0
