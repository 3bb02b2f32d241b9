"""Every rule, driven by hand-built facts (no GPU needed)."""

from __future__ import annotations

import dataclasses

import pytest
from fakes.facts import (
    GiB,
    facts,
    gpu,
    host,
    nvml_gpus,
    nvml_missing,
    process,
    torch_cpu_machine,
    torch_cuda,
    torch_import_failed,
    torch_timed_out,
    wheel,
)

from devcheck.facts import Finding, LiveCheck, NvmlFacts, WheelFacts
from devcheck.rules.diagnose import diagnose, worst


def by_id(findings: list[Finding], fid: str) -> list[Finding]:
    return [f for f in findings if f.id == fid]


def one(findings: list[Finding], fid: str) -> Finding:
    found = by_id(findings, fid)
    assert len(found) == 1, [f.id for f in findings]
    return found[0]


def test_no_nvidia_gpu_on_the_bus_is_said_in_plain_words() -> None:
    f = one(diagnose(facts()), "no_driver")
    assert f.severity == "warn" and f.pitfall == "no_driver"
    assert f.title == "no NVIDIA GPU on this machine: torch uses the CPU"
    assert f.fix.startswith("nothing to fix for the CPU: use device='cpu'")
    assert "CUDA 13.0" in f.fix and "driver >= 580" in f.fix  # only if they get a GPU
    # Each fact once: the raw NVML error and torch's sentence stay in the facts section.
    assert "NVMLError" not in f.title + f.evidence and "Found no NVIDIA" not in f.evidence
    assert "--gpus all" not in f.fix  # not in a container
    assert worst(diagnose(facts())) == "warn"


def test_no_driver_but_nvidia_gpu_on_the_bus_is_an_error() -> None:
    f = one(diagnose(facts(host_facts=host(nvidia_pci_devices=1, in_container=True,
                                           container_kind="docker"))), "no_driver")
    assert f.severity == "error" and f.title == "NVIDIA GPU present, driver missing"
    assert "1 NVIDIA GPU(s) on the PCI bus" in f.evidence and "CUDA 13.0" in f.evidence
    assert f.fix.startswith("install a driver supporting CUDA 13.0") and "--gpus all" in f.fix


def test_no_driver_where_the_bus_cannot_be_read() -> None:
    f = one(diagnose(facts(host_facts=host(nvidia_pci_devices=None))), "no_driver")
    assert f.severity == "warn" and f.title == "no NVIDIA driver: torch uses the CPU"
    assert "libnvidia-ml.so.1 not found" in f.evidence and "To use an NVIDIA GPU" in f.fix


def test_no_driver_with_cpu_wheel_is_info() -> None:
    t = torch_cpu_machine(cuda=None, version="2.14.1+cpu")
    f = one(diagnose(facts(torch=t)), "no_driver")
    assert f.severity == "info" and not by_id(diagnose(facts(torch=t)), "cpu_only_wheel")
    assert "whl/cpu" not in f.fix and "CUDA" not in f.evidence


def test_driver_not_loaded_same_rule() -> None:
    n = NvmlFacts(available=False, error_kind="driver_not_loaded", error="Driver Not Loaded")
    assert "kernel driver is not loaded" in one(diagnose(facts(nvml=n)), "no_driver").evidence
    on_bus = facts(nvml=n, host_facts=host(nvidia_pci_devices=2))
    assert one(diagnose(on_bus), "no_driver").title == "NVIDIA GPU present, driver not loaded"


@pytest.mark.parametrize("kind, fid, severity", [
    ("bindings_missing", "nvml_bindings_missing", "info"),
    ("timeout", "nvml_timeout", "error"),
    ("driver_mismatch", "driver_library_mismatch", "error"),
    ("no_permission", "nvml_no_permission", "warn"),
    ("unknown", "nvml_error", "warn"),
])
def test_other_nvml_failures(kind: str, fid: str, severity: str) -> None:
    n = NvmlFacts(available=False, error_kind=kind, error=f"{kind} happened")
    assert one(diagnose(facts(nvml=n)), fid).severity == severity


def test_nvml_missing_but_torch_uses_the_gpu_is_only_info() -> None:
    found = diagnose(facts(nvml=nvml_missing(), torch=torch_cuda(1)))
    assert one(found, "nvml_missing").severity == "info" and not by_id(found, "no_driver")
    assert one(found, "cuda_ok").severity == "ok"


def test_cpu_only_wheel_with_gpus_gives_install_command_for_driver() -> None:
    t = torch_cpu_machine(cuda=None, version="2.5.0+cpu")
    f = one(diagnose(facts(nvml=nvml_gpus(2, cuda="12.4", driver="550.54.15"), torch=t)),
            "cpu_only_wheel")
    assert f.severity == "error" and f.pitfall == "cpu_only_wheel"
    assert "2.5.0+cpu" in f.title and "NVML sees 2 GPU(s)" in f.evidence
    assert ("pip install --force-reinstall torch --index-url "
            "https://download.pytorch.org/whl/cu124") in f.fix


def test_cpu_only_wheel_in_gpus_mode_from_files() -> None:
    d = facts(nvml=nvml_gpus(1, cuda="12.8"), wheel_facts=wheel(None, "2.6.0+cpu"), no_torch=True)
    f = one(diagnose(d), "cpu_only_wheel")
    assert "whl/cu128" in f.fix


def test_rocm_wheel_on_nvidia_is_reported() -> None:
    w = WheelFacts(installed=True, version="2.5.0+rocm6.2", hip_version="6.2", cpu_only=False)
    f = one(diagnose(facts(nvml=nvml_gpus(1), wheel_facts=w, no_torch=True)), "cpu_only_wheel")
    assert "ROCm" in f.title


def test_driver_older_major_is_error_with_both_fixes() -> None:
    t = torch_cpu_machine(
        reason="The NVIDIA driver on your system is too old (found version 12040)")
    found = diagnose(facts(nvml=nvml_gpus(1, cuda="12.4", driver="550.54.15"), torch=t))
    f = one(found, "driver_too_old")
    assert f.severity == "error" and "12.4" in f.title and "13.0" in f.title
    assert "driver >= 580" in f.fix and "whl/cu124" in f.fix
    assert "too old (found version 12040)" in f.evidence
    assert not by_id(found, "torch_cannot_use_gpu")  # already explained


def test_driver_older_minor_is_warning() -> None:
    t = torch_cuda(1, version="2.7.0+cu128", cuda_version="12.8")
    f = one(diagnose(facts(nvml=nvml_gpus(1, cuda="12.6"), torch=t)), "driver_too_old")
    assert f.severity == "warn" and "minor-version compatibility" in f.evidence


def test_driver_older_minor_fix_names_a_newer_driver_than_the_one_seen() -> None:
    t = torch_cuda(1, version="2.7.0+cu128", cuda_version="12.8")
    d = facts(nvml=nvml_gpus(1, cuda="12.2", driver="535.104.05"), torch=t)
    f = one(diagnose(d), "driver_too_old")
    assert "update to a driver supporting CUDA 12.8 (on Linux: driver >= 570.26" in f.fix
    assert "whl/cu121" in f.fix


def test_old_11x_driver_gets_the_cu118_wheel() -> None:
    t = torch_cpu_machine(reason="The NVIDIA driver on your system is too old "
                                 "(found version 11040)")
    d = facts(nvml=nvml_gpus(1, cuda="11.4", driver="470.256.02"), torch=t)
    assert "whl/cu118" in one(diagnose(d), "driver_too_old").fix


def test_driver_new_enough_is_silent_and_gpus_mode_uses_the_wheel() -> None:
    assert not by_id(diagnose(facts(nvml=nvml_gpus(1, cuda="13.1"), torch=torch_cuda(1))),
                     "driver_too_old")
    d = facts(nvml=nvml_gpus(1, cuda="12.4"), no_torch=True)  # wheel says CUDA 13.0
    assert one(diagnose(d), "driver_too_old").severity == "error"


def test_gpu_arch_not_in_wheel_old_and_new() -> None:
    found = diagnose(facts(nvml=nvml_gpus(1, compute_capability="6.1", name="GTX 1080"),
                           torch=torch_cuda(1, ok=False, capability="6.1",
                                            error="CUDA error: no kernel image is available")))
    f = one(found, "gpu_arch_not_in_wheel")
    assert f.severity == "error" and "6.1" in f.title and "sm_75" in f.evidence
    assert "cu126" in f.fix
    live = one(found, "live_check_failed")
    assert live.pitfall == "gpu_arch_not_in_wheel"
    f = one(diagnose(facts(nvml=nvml_gpus(1, compute_capability="11.0"), torch=torch_cuda(1))),
            "gpu_arch_not_in_wheel")
    assert "newer torch" in f.fix
    assert not by_id(diagnose(facts(nvml=nvml_gpus(1, compute_capability="8.9"),
                                    torch=torch_cuda(1))), "gpu_arch_not_in_wheel")


def test_lost_gpu() -> None:
    n = NvmlFacts(available=True, driver_version="580.65.06", cuda_driver_version="13.0",
                  gpus=(gpu(0), gpu(1, error="NVMLError_GpuIsLost: GPU is lost")))
    f = one(diagnose(facts(nvml=n, torch=torch_cuda(1))), "gpu_lost")
    assert f.severity == "error" and "GPU 1" in f.title


def test_busy_and_shared_gpus() -> None:
    full = gpu(0, memory_used_bytes=23 * GiB, processes=(process(99, 22000), process(98, None)))
    busy = gpu(1, utilization_gpu_pct=100)
    shared = gpu(2, processes=(process(7, 100),))
    n = NvmlFacts(available=True, driver_version="580", cuda_driver_version="13.0",
                  gpus=(full, busy, shared))
    found = diagnose(facts(nvml=n, torch=torch_cuda(3)))
    busy_f = by_id(found, "gpu_busy")
    assert [f.severity for f in busy_f] == ["warn", "warn"]
    assert "nearly full" in busy_f[0].title and "pid 99 python99 (22,000 MiB)" in busy_f[0].evidence
    assert "pid 98 python98 (?)" in busy_f[0].evidence
    assert "busy" in busy_f[1].title
    assert one(found, "gpu_shared").severity == "info"


@pytest.mark.parametrize("value, n, severity, text", [
    ("", 2, "warn", "hides every GPU"),
    ("-1", 2, "warn", "hides every GPU"),
    ("-1", 0, "info", "hides every GPU"),
    ("1", 2, "info", "shows 1 of 2"),
    ("0,5", 2, "warn", "malformed"),
    ("0,,1", 2, "warn", "malformed"),
    ("gpu0", 2, "warn", "hides every GPU"),
    ("GPU-0001", 2, "info", "shows 1 of 2"),
    ("GPU-ffff", 2, "warn", "hides every GPU"),
])
def test_cuda_visible_devices(value: str, n: int, severity: str, text: str) -> None:
    d = facts(host_facts=host(env={"CUDA_VISIBLE_DEVICES": value}),
              nvml=nvml_gpus(n) if n else nvml_missing(), torch=torch_cuda(1))
    f = one(diagnose(d), "cuda_visible_devices")
    assert f.severity == severity and text in f.title and f.pitfall == "invalid_device_ordinal"


@pytest.mark.parametrize("value, said", [("-1", "-1 hides every GPU"),
                                         ("", "an empty value hides every GPU")])
def test_hiding_every_gpu_on_purpose_is_said_so(value: str, said: str) -> None:
    f = one(diagnose(facts(nvml=nvml_gpus(2), torch=torch_cuda(0),
                           host_facts=host(env={"CUDA_VISIBLE_DEVICES": value}))),
            "cuda_visible_devices")
    assert f.evidence.startswith(said) and "not a GPU index" not in f.evidence


def test_visible_devices_fine_when_all_shown() -> None:
    d = facts(host_facts=host(env={"CUDA_VISIBLE_DEVICES": "0,1"}), nvml=nvml_gpus(2),
              torch=torch_cuda(2))
    assert not by_id(diagnose(d), "cuda_visible_devices")


def test_hidden_gpus_explain_unavailability() -> None:
    d = facts(host_facts=host(env={"CUDA_VISIBLE_DEVICES": "-1"}), nvml=nvml_gpus(1),
              torch=torch_cpu_machine(reason=None))
    assert not by_id(diagnose(d), "torch_cannot_use_gpu")


def test_torch_cannot_use_gpu_quotes_torch() -> None:
    t = torch_cpu_machine(reason="CUDA unknown error - this may be due to an incorrectly set up "
                                 "environment")
    f = one(diagnose(facts(nvml=nvml_gpus(1), torch=t)), "torch_cannot_use_gpu")
    assert f.severity == "error" and "CUDA unknown error" in f.evidence


def test_torch_import_failure_and_missing_and_timeout() -> None:
    f = one(diagnose(facts(torch=torch_import_failed())), "torch_import_failed")
    assert f.severity == "error" and "libcudnn.so.9" in f.title
    d = facts(torch=torch_import_failed("ModuleNotFoundError: No module named 'torch'"),
              wheel_facts=WheelFacts(installed=False, error="not installed"))
    assert one(diagnose(d), "torch_not_installed").severity == "error"
    d = facts(wheel_facts=WheelFacts(installed=False, error="not installed"), no_torch=True)
    assert one(diagnose(d), "torch_not_installed").severity == "info"
    f = one(diagnose(facts(torch=torch_timed_out(5))), "torch_probe_failed")
    assert f.severity == "error" and "timed out after 5s" in f.title



def test_passed_live_check_without_timing_or_error_still_reports_ok() -> None:
    """LiveCheck's optional fields may be None (hand-built facts): no rule may crash on it."""
    t = torch_cuda(1)
    t = dataclasses.replace(t, live_checks=(LiveCheck("cpu", True), LiveCheck("cuda:0", True)))
    found = diagnose(facts(nvml=nvml_gpus(1), torch=t))
    assert not by_id(found, "rule_failed"), found
    assert one(found, "cuda_ok").severity == "ok" and one(found, "cpu_ok")

def test_live_check_failure_and_success() -> None:
    found = diagnose(facts(nvml=nvml_gpus(2), torch=torch_cuda(2, ok=False)))
    assert len(by_id(found, "live_check_failed")) == 2
    found = diagnose(facts(nvml=nvml_gpus(2), torch=torch_cuda(2)))
    assert [f.title for f in by_id(found, "cuda_ok")] == [
        "cuda:0 (NVIDIA GeForce RTX 4090) works", "cuda:1 (NVIDIA GeForce RTX 4090) works"]
    assert worst(found) in ("ok", "info")


def test_not_live_checked() -> None:
    t = torch_cuda(1, live_checks=())
    assert one(diagnose(facts(nvml=nvml_gpus(1), torch=t)), "cuda_not_live_checked")


def test_default_device_not_cpu() -> None:
    f = one(diagnose(facts(torch=torch_cuda(1, default_device="cuda:0"), nvml=nvml_gpus(1))),
            "default_device_not_cpu")
    assert f.severity == "warn" and f.pitfall == "default_device_sampler_generator"
    assert "generator" in f.evidence


def test_mps_rules_only_on_macos() -> None:
    mac = host(os_name="Darwin", nvidia_pci_devices=None)
    t = torch_cpu_machine(cuda=None, version="2.5.0")
    assert one(diagnose(facts(host_facts=mac, torch=t)), "mps_not_built").severity == "warn"
    t2 = t.__class__(**{**t.__dict__, "mps_built": True})
    assert one(diagnose(facts(host_facts=mac, torch=t2)), "mps_unavailable")
    assert not by_id(diagnose(facts(torch=t)), "mps_not_built")


def test_small_shm_in_docker() -> None:
    h = host(shm_total_bytes=64 * 1024**2, shm_free_bytes=60 * 1024**2, in_container=True)
    f = one(diagnose(facts(host_facts=h)), "shm_too_small")
    assert f.severity == "warn" and f.pitfall == "dataloader_shm_exhausted"
    assert "--shm-size" in f.fix and "64 MiB" in f.title
    assert not by_id(diagnose(facts()), "shm_too_small")
    assert not by_id(diagnose(facts(host_facts=host(os_name="Windows", shm_total_bytes=1))),
                     "shm_too_small")


@pytest.mark.parametrize("cpus, suggested, mentions_warning", [(2, 2, True), (16, 8, False),
                                                                (1, 1, True)])
def test_num_workers_advice(cpus: int, suggested: int, mentions_warning: bool) -> None:
    f = one(diagnose(facts(host_facts=host(cpu_usable=cpus))), "num_workers")
    assert f"num_workers={suggested}" in f.fix and "hard-codes" in f.evidence
    assert ("suggested maximum" in f.evidence) is mentions_warning


def test_host_probe_errors_and_rule_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    assert one(diagnose(facts(host_facts=host(errors=("memory: boom",)))), "host_probe_partial")
    import devcheck.rules.diagnose as dg

    def crash(_facts: object) -> list[Finding]:
        raise KeyError("bug")

    monkeypatch.setattr(dg, "RULES", (crash, *dg.RULES[1:]))
    f = one(dg.diagnose(facts()), "rule_failed")
    assert "crash" in f.title and "KeyError" in f.evidence


def test_findings_sorted_worst_first() -> None:
    found = diagnose(facts(nvml=nvml_gpus(1, cuda="12.4"), torch=torch_cuda(1)))
    order = [f.severity for f in found]
    rank = {"error": 0, "warn": 1, "info": 2, "ok": 3}
    assert order == sorted(order, key=rank.__getitem__) and order[0] == "error"


def test_cpu_live_check_failure() -> None:
    t = torch_cpu_machine()
    t = t.__class__(**{**t.__dict__, "live_checks": (LiveCheck("cpu", False, error="boom"),)})
    assert one(diagnose(facts(torch=t)), "live_check_failed").severity == "error"


def test_driver_loaded_but_no_gpu() -> None:
    f = one(diagnose(facts(nvml=nvml_gpus(0))), "no_gpu")
    assert f.severity == "warn"
    f = one(diagnose(facts(nvml=nvml_gpus(0), host_facts=host(nvidia_pci_devices=2))), "no_gpu")
    assert f.severity == "error" and "2 NVIDIA GPU(s)" in f.evidence


# --- hostile environments (issue 9 audit): unknown evidence is said as unknown ---------------

MISSING_VERSION = WheelFacts(installed=True, version=None, location="/x/torch",
                             error="could not read /x/torch/version.py: No such file or directory")


def test_an_unreadable_version_file_is_an_unknown_build_never_cpu_only() -> None:
    on_gpus = diagnose(facts(nvml=nvml_gpus(2), wheel_facts=MISSING_VERSION, no_torch=True))
    assert not by_id(on_gpus, "cpu_only_wheel") and worst(on_gpus) == "warn"
    f = one(on_gpus, "wheel_build_unknown")
    assert f.severity == "warn" and "torch/version.py" in f.title
    assert "/x/torch/version.py: No such file or directory" in f.evidence
    assert "NVML sees 2 GPU(s)" in f.evidence and "whl/cu130" in f.fix
    assert "CPU-only" not in f.title + f.evidence + f.fix and "None" not in f.title
    no_gpu = one(diagnose(facts(wheel_facts=MISSING_VERSION, no_torch=True)),
                 "wheel_build_unknown")
    assert no_gpu.severity == "info" and "No such file" in no_gpu.evidence


def test_a_wheel_without_cuda_or_rocm_that_is_not_cpu_only_is_not_called_cpu_only() -> None:
    xpu = WheelFacts(installed=True, version="2.8.0+xpu", cpu_only=False, location="/x/torch")
    f = one(diagnose(facts(nvml=nvml_gpus(1), wheel_facts=xpu, no_torch=True)), "cpu_only_wheel")
    assert f.title == "this torch build is built without CUDA (2.8.0+xpu)"


UNKNOWN_AFTER_INIT = NvmlFacts(available=True, error_kind="unknown",
                               error="nvmlSystemGetDriverVersion() failed: NVMLError_Unknown: "
                                     "Unknown")


def test_nvml_that_started_but_cannot_list_the_gpus_is_an_error_naming_the_error() -> None:
    found = diagnose(facts(nvml=UNKNOWN_AFTER_INIT, no_torch=True))
    f = one(found, "nvml_query_failed")
    assert f.severity == "error" and "NVMLError_Unknown" in f.title
    assert "nvmlInit() succeeded" in f.evidence and "driver ? (CUDA ?)" in f.evidence
    assert "None" not in f.title + f.evidence and "nvidia-smi" in f.fix
    count = NvmlFacts(available=True, error_kind="unknown", driver_version="580.65.06",
                      cuda_driver_version="13.0",
                      error="could not count GPUs: NVMLError_Unknown: Unknown")
    assert one(diagnose(facts(nvml=count)), "nvml_query_failed").severity == "error"
    # torch computes on CUDA anyway: only the GPU details are missing
    assert one(diagnose(facts(nvml=UNKNOWN_AFTER_INIT, torch=torch_cuda(1))),
               "nvml_query_failed").severity == "warn"


@pytest.mark.parametrize("value", [
    "0,0", "1,1", "0,1,0", "0, 00", "0,+0", "0,5,0",  # a repeat empties the list before the
    "0abc,0",  # range check, and "0abc" is 0 (the leading digits)
    "GPU-aaaa,GPU-aaaa", "GPU-aaaa-1,GPU-aa",  # two prefixes of one UUID: the same GPU
])
def test_a_repeated_visible_device_hides_every_gpu(value: str) -> None:
    n = NvmlFacts(available=True, driver_version="580.65.06", cuda_driver_version="13.0",
                  gpus=(gpu(0, uuid="GPU-aaaa-1"), gpu(1, uuid="GPU-bbbb-2")))
    f = one(diagnose(facts(nvml=n, torch=torch_cuda(0),
                           host_facts=host(env={"CUDA_VISIBLE_DEVICES": value}))),
            "cuda_visible_devices")
    assert f.severity == "warn" and "hides every GPU" in f.title
    assert "a repeated entry hides every GPU" in f.evidence and "list each GPU once" in f.fix


@pytest.mark.parametrize("value, severity, text, evidence", [
    ("0abc", "info", "malformed", "'0abc' reads as 0"),  # strtoul: the rest is ignored
    ("1gpu,0", "info", "malformed", "1, 0 are visible"),
    ("0,GPU-0001", "warn", "malformed", "'GPU-0001' is a UUID after an index"),
    ("GPU-0000,1", "warn", "malformed", "a list that starts with a UUID takes only UUIDs"),
    ("GPU-0000, GPU-0001", "warn", "malformed", "no spaces"),
    ("GPU-", "warn", "hides every GPU", "ambiguous"),
    ("0,-1,1", "warn", "malformed", "'-1' is negative"),
    ("0,1,-1,0", "warn", "malformed", "only 0, 1 are visible"),  # stops before the repeat
    ("0,5,1", "warn", "malformed", "index 5 does not exist"),
    ("MIG-abc", "info", "shows 1 of 2", "cuda:0..cuda:0"),
])
def test_visible_devices_follow_torchs_parser(value: str, severity: str, text: str,
                                              evidence: str) -> None:
    f = one(diagnose(facts(nvml=nvml_gpus(2), torch=torch_cuda(1),
                           host_facts=host(env={"CUDA_VISIBLE_DEVICES": value}))),
            "cuda_visible_devices")
    assert (f.severity, text in f.title, evidence in f.evidence) == (severity, True, True), f
