"""Text, JSON and Markdown renderings and the exit code."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from fakes.facts import (
    facts,
    gpu,
    nvml_gpus,
    process,
    torch_cpu_machine,
    torch_cuda,
    torch_import_failed,
)

from devcheck.facts import DoctorFacts, Finding, GpuProcess, LiveCheck, NvmlFacts, WheelFacts
from devcheck.render import common, markdown
from devcheck.render.json import render_json, to_json
from devcheck.render.text import render_text
from devcheck.rules.diagnose import diagnose

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_json_schema_keys_and_values() -> None:
    d = facts(nvml=nvml_gpus(1), torch=torch_cuda(1))
    doc = json.loads(render_json(to_json(d, diagnose(d), command="doctor")))
    assert doc["schema_version"] == 2 and doc["command"] == "doctor"
    assert "compiled_cuda_version" not in doc["torch"]  # schema 2: torch.cuda_version only
    assert doc["gpus"][0]["errors"] == {} and doc["torch"]["errors"] == {}
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
    doc = json.loads(render_json(to_json(d, diagnose(d), command="doctor")))
    assert doc["summary"]["exit_code"] == 1 and doc["torch"]["imported"] is False
    d = facts(no_torch=True)
    doc = json.loads(render_json(to_json(d, diagnose(d), command="gpus")))
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
    doc = _strict_json(render_json(to_json(d, diagnose(d), command="doctor")))
    errors = {c["device"]: c["max_abs_error"] for c in doc["torch"]["live_checks"]}
    assert errors["cuda:0"] is None and errors["cuda:1"] is None
    assert doc["summary"]["exit_code"] == 1

def test_exit_code() -> None:
    assert common.exit_code([]) == 0
    assert common.exit_code([Finding("a", "warn", "t", "e")]) == 0
    assert common.exit_code([Finding("a", "warn", "t", "e"), Finding("b", "error", "t", "e")]) == 1


def test_text_report_answer_first_and_findings() -> None:
    d = facts()
    text = render_text(d, diagnose(d))
    first = text.splitlines()[0]
    assert first == "Can torch use the GPU? no: no NVIDIA GPU on this machine: torch uses the CPU"
    assert text.splitlines()[1].startswith("Do new tensors go to the GPU by default? no: ")
    assert "[warn] no NVIDIA GPU on this machine" in text and "fix:" in text
    # Each fact once: NVML's error string in the facts section only.
    assert text.count("NVML Shared Library Not Found") == 1
    assert "see: devcheck pitfalls show no_driver" in text
    assert "\x1b[" not in text and text.rstrip().endswith("exit 0: no error findings")


def test_colour_only_when_asked() -> None:
    d = facts()
    assert "\x1b[" in render_text(d, diagnose(d), color=True)


def test_gpu_lines_with_missing_fields_and_processes() -> None:
    n = NvmlFacts(available=True, driver_version="580.65.06", cuda_driver_version="13.0", gpus=(
        gpu(0, power_draw_w=None, temperature_c=None,
            processes=(process(7, 100), process(8, None))),
        gpu(1, error="NVMLError_GpuIsLost: GPU is lost")))
    text = render_text(facts(nvml=n, torch=torch_cuda(1)), [])
    assert "[0] NVIDIA GeForce RTX 4090  CC 8.9 | n/a, 2 %" in text
    assert "python7/7(100M) python8/8(?)" in text and "[1] not usable: NVMLError_GpuIsLost" in text


def test_cudnn_version_text() -> None:
    assert common.cudnn_text(92400) == "9.24.0" and common.cudnn_text(8902) == "8.9.2"
    assert common.cudnn_text(None) == "-"


def test_text_lines_fit_in_100_columns_unless_unbreakable() -> None:
    d = facts()
    for line in render_text(d, diagnose(d)).splitlines()[1:]:  # the answer stays whole
        assert len(line) <= common.WIDTH or " " not in line.strip()


@pytest.mark.parametrize("default, gpu_ok, words", [
    ("cpu", False, "no: new tensors and models go to the CPU"),
    ("cpu", True, "even though cuda:0 works"),
    ("cuda:0", True, "yes, to cuda:0"),
])
def test_default_device_in_plain_words(default: str, gpu_ok: bool, words: str) -> None:
    t = torch_cuda(1, default_device=default) if gpu_ok else torch_cpu_machine()
    d = facts(nvml=nvml_gpus(1) if gpu_ok else None, torch=t)
    assert words in common.default_device_answer(d)
    doc = json.loads(render_json(to_json(d, diagnose(d), command="doctor")))
    assert words in doc["summary"]["default_device_answer"]


HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m\rname"


def _hostile_facts() -> DoctorFacts:
    n = NvmlFacts(available=True, driver_version="580.65.06", cuda_driver_version="13.0",
                  gpus=(gpu(0, name=HOSTILE, memory_used_bytes=23 * 1024**3,
                            processes=(GpuProcess(7, HOSTILE, 1024**3),)),))
    return facts(nvml=n, torch=torch_cuda(1))


def test_names_from_outside_never_reach_the_terminal_raw() -> None:
    d = _hostile_facts()
    text = render_text(d, diagnose(d), color=False)
    assert not CONTROL.search(text.replace("\n", "")), repr(text)
    assert "evil\\x1b]0;pwned\\x07" in text  # shown, escaped, not executed
    coloured = render_text(d, diagnose(d), color=True)
    assert "\x1b]" not in coloured and "\x1b[2J" not in coloured and "\x9b" not in coloured


# --- Markdown, checked with a real CommonMark parser (GitHub's tables enabled) -------------

markdown_it = pytest.importorskip("markdown_it")


def _parse(text: str) -> list:
    return markdown_it.MarkdownIt("commonmark").enable("table").parse(text)


def _table_rows(tokens: list) -> list[list[str]]:
    """The text of each table row's cells, as the parser split them."""
    rows: list[list[str]] = []
    for i, t in enumerate(tokens):
        if t.type == "tr_open":
            rows.append([])
        elif t.type in ("th_open", "td_open"):
            rows[-1].append(tokens[i + 1].content)
    return rows


@pytest.mark.parametrize("case", ["no_driver", "two_gpus", "import_failed", "gpus_command",
                                  "hostile_names"])
def test_markdown_report_parses_with_table_findings_and_details(case: str) -> None:
    d, command = {
        "no_driver": (facts(), "doctor"),
        "two_gpus": (facts(nvml=nvml_gpus(2), torch=torch_cuda(2)), "doctor"),
        "import_failed": (facts(nvml=nvml_gpus(1), torch=torch_import_failed()), "doctor"),
        "gpus_command": (facts(nvml=nvml_gpus(1), no_torch=True), "gpus"),
        "hostile_names": (_hostile_facts(), "doctor"),
    }[case]
    findings = diagnose(d)
    text = markdown.render_markdown(d, findings, command=command)
    assert not CONTROL.search(text.replace("\n", "")), "raw control characters"
    tokens = _parse(text)
    types = [t.type for t in tokens]
    assert "table_open" in types and "bullet_list_open" in types
    # The summary table: two columns, one row per fact, "|" in values escaped (no extra cell).
    cells = _table_rows(tokens)
    assert all(len(c) == 2 for c in cells), cells
    keys = [c[0] for c in cells]
    assert {"torch wheel", "NVIDIA driver", "GPUs", "exit code"} <= set(keys)
    assert ("usable devices" in keys) == (command == "doctor")
    # Findings with fixes, worst first, as a list.
    first_error = next((f for f in findings if f.severity == "error"), None)
    if first_error is not None:
        assert f"(`{first_error.id}`)" in text and "fix:" in text
    # The full facts: an HTML <details> block holding the JSON document, intact.
    html = [t for t in tokens if t.type == "html_block"]
    assert html and html[0].content.startswith("<details>")
    assert html[-1].content.strip() == "</details>"
    fence = next(t for t in tokens if t.type == "fence")
    assert fence.info == "json"
    doc = json.loads(fence.content)
    assert doc["command"] == command and doc["summary"]["exit_code"] == common.exit_code(findings)


def test_markdown_html_and_pipes_in_values_are_escaped() -> None:
    d = facts(nvml=NvmlFacts(available=False, error_kind="unknown",
                             error="<script>alert(1)</script> | x"))
    text = markdown.render_markdown(d, diagnose(d), command="doctor")
    body = text[: text.index("<details>")]
    assert "<script>" not in body and "&lt;script&gt;" in body
    html = [t for t in _parse(text) if t.type in ("html_block", "html_inline")]
    assert all(not t.content.lstrip().startswith("<script") for t in html)


def test_markdown_code_spans_stay_verbatim() -> None:
    f = Finding("x", "warn", "a <b> title", "seen", "set `CUDA_VISIBLE_DEVICES=<index>` & retry")
    text = markdown.render_markdown(facts(), [f], command="doctor")
    assert "`CUDA_VISIBLE_DEVICES=<index>` &amp; retry" in text and "a &lt;b&gt; title" in text
    code = [t for t in _parse(text) for t in (t.children or []) if t.type == "code_inline"]
    assert "CUDA_VISIBLE_DEVICES=<index>" in [t.content for t in code]


# --- hostile environments (issue 9 audit): unknown is "?", never "None" or a guess -----------

def _both(d: DoctorFacts, command: str = "gpus") -> tuple[str, str]:
    findings = diagnose(d)
    md = markdown.render_markdown(d, findings, command=command)
    return render_text(d, findings), md[: md.index("<details>")]  # the JSON keeps its nulls


def test_an_unknown_wheel_build_reads_build_unknown_not_cpu_only() -> None:
    w = WheelFacts(installed=True, version=None, location="/x/torch",
                   error="could not read /x/torch/version.py: No such file or directory")
    for out in _both(facts(nvml=nvml_gpus(2), wheel_facts=w, no_torch=True)):
        assert "? (build unknown)" in out and "/x/torch/version.py: No such file" in out
        assert "CPU-only" not in out and "None" not in out


def test_nvml_that_cannot_list_its_gpus_shows_the_error_and_an_unknown_driver() -> None:
    n = NvmlFacts(available=True, error_kind="unknown",
                  error="nvmlSystemGetDriverVersion() failed: NVMLError_Unknown: Unknown")
    d = facts(nvml=n, no_torch=True)
    text, md = _both(d)
    for out in (text, md, common.answer(d, diagnose(d))):
        assert "None" not in out and "NVMLError_Unknown" in out and "0 GPU(s)" not in out
    assert text.splitlines()[0].endswith("? NVML started but could not list the GPUs: "
                                    "nvmlSystemGetDriverVersion() failed: NVMLError_Unknown: "
                                    "Unknown")
    assert "driver ?, supports CUDA ?; GPUs unknown" in text and "| ? (CUDA ?) |" in md


def test_a_gpus_unreadable_fields_are_shown_in_its_line() -> None:
    g = gpu(0, processes=(process(4242, 2048),), power_draw_w=None,
            errors={"processes": "1 process record(s) could not be read",
                    "power_draw_w": "NotSupported", "temperature_c": "NotSupported"})
    d = facts(nvml=NvmlFacts(available=True, driver_version="580.65.06",
                             cuda_driver_version="13.0", gpus=(g,)), no_torch=True)
    text, md = _both(d)
    said = ("NVML: 1 process record(s) could not be read (processes); "
            "NotSupported (power_draw_w, temperature_c)")
    assert said in " ".join(text.split()) and said in md
    assert "NVML:" not in render_text(facts(nvml=nvml_gpus(1), no_torch=True), [])
