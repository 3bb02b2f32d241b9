"""``devcheck gpus`` / ``doctor`` in the hostile environments of the issue-9 audit.

Each test is one audit case (scripts/audit/cases_env.py) run in-process through click's
CliRunner with a scenario fake of pynvml: what is unknown is said to be unknown, an NVML
that fails after starting is an error finding that names the error, every field NVML could
not read is shown, and CUDA_VISIBLE_DEVICES is read by torch's own rules (checked against
torch's parser itself).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fakes import fake_pynvml as fk
from fakes.facts import facts, gpu, host, torch_cuda

from devcheck.cli import cli
from devcheck.facts import NvmlFacts
from devcheck.probe import wheel
from devcheck.rules.visible import _parse_visible

GiB = 1024**3


def run(args: list[str]) -> Result:
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    assert "Traceback" not in result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_no_version_file_on_a_two_gpu_machine_is_an_unknown_build(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """env.torch.version_missing.gpus_2gpu: a torch folder without torch/version.py."""
    fk.install(monkeypatch, fk.two_gpus())
    monkeypatch.setattr(wheel, "_find_torch_dir", lambda: tmp_path)
    text = run(["gpus"])
    out = " ".join(text.output.split())
    assert text.exit_code == 0, text.output
    assert f"wheel ? (build unknown) at {tmp_path}" in out
    assert "version.py: No such file or directory" in out
    assert "CPU-only" not in out and "cpu_only_wheel" not in out
    doc = json.loads(run(["gpus", "--json"]).stdout)
    assert doc["wheel"]["cpu_only"] is None and doc["wheel"]["version"] is None
    (f,) = [f for f in doc["findings"] if f["id"] == "wheel_build_unknown"]
    assert f["severity"] == "warn" and str(tmp_path / "version.py") in f["evidence"]


def _unknown_after_init(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fk.build_module(fk.two_gpus())

    def unknown(*args: object) -> None:
        raise fk.ERRORS["NVMLError_Unknown"]()

    for name in dir(mod):
        if name.startswith("nvml") and name not in ("nvmlInit", "nvmlShutdown"):
            setattr(mod, name, unknown)
    monkeypatch.setitem(sys.modules, "pynvml", mod)


def test_nvml_unknown_error_after_init_is_an_error_finding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """env.nvml.unknown.gpus: nvmlInit works, then every call raises NVMLError_Unknown."""
    _unknown_after_init(monkeypatch)
    text = run(["gpus"])
    assert text.exit_code == 1, text.output
    assert "[ERROR] the NVIDIA driver answers but cannot list its GPUs" in text.output
    assert "NVMLError_Unknown" in text.output.split("\nFindings", 1)[1]
    assert "None" not in text.output and "0 GPU(s)" not in text.output
    doc = json.loads(run(["gpus", "--json"]).stdout)
    (f,) = [f for f in doc["findings"] if f["id"] == "nvml_query_failed"]
    assert f["severity"] == "error" and "NVMLError_Unknown" in f["title"]
    assert doc["summary"]["exit_code"] == 1
    md = run(["gpus", "--markdown"]).output
    assert "None" not in md[: md.index("<details>")] and "nvml_query_failed" in md


def test_a_malformed_process_record_is_said_in_text_and_markdown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """env.nvml.badproc.gpus: one process record with pid 'garbage'."""
    fk.install(monkeypatch, fk.one_gpu(memory_used=3 * GiB, processes=[
        fk.FakeProcess("garbage", GiB), fk.FakeProcess(4242, 2 * GiB)]))  # type: ignore[arg-type]
    for args in (["gpus"], ["gpus", "--markdown"]):
        out = " ".join(run(args).output.split())
        assert "NVML: 1 process record(s) could not be read (processes)" in out, out
        assert "4242" in out


def test_a_repeated_visible_device_hides_every_gpu_end_to_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """env.var.cvd_dup.gpus_2gpu: CUDA_VISIBLE_DEVICES=0,0 on a two-GPU machine."""
    fk.install(monkeypatch, fk.two_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,0")
    out = " ".join(run(["gpus"]).output.split())
    assert "CUDA_VISIBLE_DEVICES='0,0' hides every GPU from torch" in out
    assert "a repeated entry hides every GPU" in out


# --- CUDA_VISIBLE_DEVICES: our reading against torch's own parser ---------------------------

UUIDS = ("GPU-aaaa-1111", "GPU-aabb-2222", "GPU-cccc-3333")
VALUES = [
    "", "0", "2", "3", "0,1,2", "2,1", "0,0", "0,1,0", "1, 1", "0,00", "0,+0", "-0", "+1",
    " 0 , 1 ", "0abc", "1gpu2,2ampere", "0abc,0", "-1", "-1,0", "0,-1,1", "0,1,-1,0", "0,,1",
    ",0", "garbage", "0,garbage,1", "0,3,1", "0,3,0", "3,0,3", "00,1", "0 1",
    "GPU-aaaa-1111", "GPU-aabb,GPU-cccc", "GPU-aaaa,GPU-aaaa", "GPU-aaaa-1,GPU-aaaa",
    "GPU-aa", "GPU-", "GPU-dddd", "GPU-cccc,GPU-dddd,GPU-aaaa", "GPU-cccc, GPU-aaaa",
    "GPU-cccc,,GPU-aaaa", "GPU-aaaa,0", "0,GPU-aaaa", " GPU-aaaa", "GPU-cccc,GPU-aa,GPU-cccc",
]


def _torch_sees(value: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """torch.cuda.device_count()'s NVML path (``_device_count_nvml``), as ordinals."""
    tc = pytest.importorskip("torch.cuda")
    parse = getattr(tc, "_parse_visible_devices", None)
    to_ordinals = getattr(tc, "_transform_uuid_to_ordinals", None)
    if parse is None or to_ordinals is None:
        pytest.skip("this torch has no _parse_visible_devices")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    parsed = parse()
    if parsed and isinstance(parsed[0], str):
        return list(to_ordinals(parsed, list(UUIDS)))
    seen: list[int] = []
    for ordinal in parsed:
        if ordinal >= len(UUIDS):  # _device_count_nvml ends the list at the first missing GPU
            break
        seen.append(ordinal)
    return seen


@pytest.mark.parametrize("value", VALUES)
def test_cuda_visible_devices_reads_like_torch(value: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _torch_sees(value, monkeypatch)
    n = NvmlFacts(available=True, driver_version="580.65.06", cuda_driver_version="13.0",
                  gpus=tuple(gpu(i, uuid=u) for i, u in enumerate(UUIDS)))
    d = facts(nvml=n, torch=torch_cuda(1), host_facts=host(env={"CUDA_VISIBLE_DEVICES": value}))
    v = _parse_visible(value, d)
    ours = [next(i for i, u in enumerate(UUIDS) if u.startswith(e)) if e.startswith("GPU-")
            else int(e) for e in v.entries]
    assert ours == expected, v
    assert v.repeated is None or v.entries == ()
