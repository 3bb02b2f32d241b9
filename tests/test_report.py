"""Text and JSON renderings and the exit code."""

from __future__ import annotations

import dataclasses
import json

from fakes.facts import facts, gpu, nvml_gpus, process, torch_cuda, torch_import_failed

from devcheck.facts import Finding, LiveCheck, NvmlFacts
from devcheck.render import report
from devcheck.rules.diagnose import diagnose


def test_json_schema_keys_and_values() -> None:
    d = facts(nvml=nvml_gpus(1), torch=torch_cuda(1))
    doc = json.loads(report.render_json(report.to_json(d, diagnose(d), command="doctor")))
    assert doc["schema_version"] == 1 and doc["command"] == "doctor"
    assert set(doc) >= {"summary", "host", "nvml", "gpus", "wheel", "torch", "findings"}
    assert set(doc["nvml"]) >= {"available", "error", "driver_version", "cuda_driver_version"}
    assert "gpus" not in doc["nvml"]
    g = doc["gpus"][0]
    assert set(g) >= {"index", "name", "uuid", "memory_total_bytes", "memory_used_bytes",
                      "utilization_gpu_pct", "compute_capability", "processes"}
    assert set(doc["findings"][0]) >= {"id", "severity", "title", "evidence", "fix", "pitfall"}
    assert doc["summary"]["cuda_usable"] == ["cuda:0"] and doc["summary"]["exit_code"] == 0
    assert doc["summary"]["answer"] == "yes: torch computes on cuda:0"


def test_json_without_torch_and_broken_everything() -> None:
    d = facts(nvml=NvmlFacts(error="x", error_kind="timeout"), torch=torch_import_failed())
    doc = json.loads(report.render_json(report.to_json(d, diagnose(d), command="doctor")))
    assert doc["summary"]["exit_code"] == 1 and doc["torch"]["imported"] is False
    d = facts(no_torch=True)
    doc = json.loads(report.render_json(report.to_json(d, diagnose(d), command="gpus")))
    assert doc["torch"] is None and doc["gpus"] == []



def _strict_json(text: str) -> dict:
    """Parse as RFC 8259 does (jq, JavaScript): NaN / Infinity are not JSON."""
    def reject(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=reject)


def test_json_stays_valid_when_a_gpu_computes_nan_or_inf() -> None:
    broken = torch_cuda(1, ok=False, error="matmul on cuda:0 differs from the CPU result by nan")
    checks = tuple(LiveCheck(c.device, c.ok, c.seconds,
                             float("nan") if c.device == "cuda:0" else c.max_abs_error, c.error)
                   for c in broken.live_checks) + (LiveCheck("cuda:1", False, 0.1, float("inf"),
                                                             "differs by inf"),)
    d = facts(nvml=nvml_gpus(1), torch=dataclasses.replace(broken, live_checks=checks))
    doc = _strict_json(report.render_json(report.to_json(d, diagnose(d), command="doctor")))
    errors = {c["device"]: c["max_abs_error"] for c in doc["torch"]["live_checks"]}
    assert errors["cuda:0"] is None and errors["cuda:1"] is None
    assert doc["summary"]["exit_code"] == 1

def test_exit_code() -> None:
    assert report.exit_code([]) == 0
    assert report.exit_code([Finding("a", "warn", "t", "e")]) == 0
    assert report.exit_code([Finding("a", "warn", "t", "e"), Finding("b", "error", "t", "e")]) == 1


def test_text_report_answer_first_and_findings() -> None:
    d = facts()
    text = report.render_text(d, diagnose(d))
    first = text.splitlines()[0]
    assert first.startswith("Can torch use the GPU? no GPU: no NVIDIA driver")
    assert "[warn] no NVIDIA driver" in text and "fix:" in text
    assert "see: devcheck pitfalls show no_driver" in text
    assert "\x1b[" not in text and text.rstrip().endswith("exit 0: no error findings")


def test_colour_only_when_asked() -> None:
    d = facts()
    assert "\x1b[" in report.render_text(d, diagnose(d), color=True)


def test_gpu_lines_with_missing_fields_and_processes() -> None:
    n = NvmlFacts(available=True, driver_version="580.65.06", cuda_driver_version="13.0", gpus=(
        gpu(0, power_draw_w=None, temperature_c=None,
            processes=(process(7, 100), process(8, None))),
        gpu(1, error="NVMLError_GpuIsLost: GPU is lost")))
    text = report.render_text(facts(nvml=n, torch=torch_cuda(1)), [])
    assert "[0] NVIDIA GeForce RTX 4090  CC 8.9 | n/a, 2 %" in text
    assert "python7/7(100M) python8/8(?)" in text and "[1] not usable: NVMLError_GpuIsLost" in text


def test_cudnn_version_text() -> None:
    assert report._cudnn(92400) == "9.24.0" and report._cudnn(8902) == "8.9.2"
    assert report._cudnn(None) == "-"


def test_text_lines_fit_in_100_columns_unless_unbreakable() -> None:
    d = facts()
    for line in report.render_text(d, diagnose(d)).splitlines()[1:]:  # the answer stays whole
        assert len(line) <= report.WIDTH or " " not in line.strip()
