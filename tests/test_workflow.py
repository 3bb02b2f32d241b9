"""The CI workflow: a CPU leg and a GPU leg, each running the README's commands.

The workflow is parsed, not run: the matrix, which steps apply to which leg (their ``if:``
conditions are evaluated for both legs), the order of the GPU gate, and that every command
the README tells a user to type is what CI types. The copy-pasteable snippet in docs/ci.md
is parsed too, so it cannot rot into invalid YAML.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")  # in the [test] extra; absent on bare GPU machines

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def fenced(path: Path, *languages: str) -> list[str]:
    """The bodies of a Markdown file's fenced blocks in the given languages."""
    return [body for lang, body in FENCE.findall(path.read_text()) if lang in languages]


def readme_commands() -> list[str]:
    """The README's set-up-and-run commands (``bash scripts/dev.sh TASK``), in order."""
    lines = [ln.strip().removeprefix("$ ") for body in
             fenced(ROOT / "README.md", "bash", "sh", "shell", "console")
             for ln in body.splitlines()]
    return list(dict.fromkeys(ln for ln in lines if ln.startswith("bash scripts/dev.sh ")))


def load(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def evaluate(condition: Any, leg: dict[str, Any]) -> bool:
    """Evaluate the small subset of GitHub expressions this workflow uses, for one leg."""
    if condition is None:
        return True
    expr = str(condition).strip().removeprefix("${{").removesuffix("}}").strip()
    expr = expr.replace("always()", "True").replace("success()", "True")
    expr = re.sub(r"matrix\.(\w+)", lambda m: repr(leg[m.group(1)]), expr)
    expr = expr.replace("&&", " and ").replace("||", " or ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    assert re.fullmatch(r"[\w\s()'\"]*", expr), f"unsupported expression: {condition!r}"
    return bool(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - checked token set


def commands(job: dict[str, Any], leg: dict[str, Any]) -> list[str]:
    """The shell commands one leg runs, in order (one entry per logical line)."""
    out = []
    for step in job["steps"]:
        if "run" not in step or not evaluate(step.get("if"), leg):
            continue
        script = re.sub(r"\\\n", " ", step["run"])  # join backslash continuations
        out.extend(" ".join(line.split()) for line in script.splitlines() if line.strip())
    return out


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def job(workflow: dict[str, Any]) -> dict[str, Any]:
    jobs = [j for j in workflow["jobs"].values() if "matrix" in j.get("strategy", {})]
    assert len(jobs) == 1, "one matrix job expected"
    return jobs[0]


def legs(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {leg["name"]: leg for leg in job["strategy"]["matrix"]["include"]}


def test_triggers(workflow: dict[str, Any]) -> None:
    assert {"push", "pull_request"} <= set(workflow["on"])


def test_matrix_has_a_cpu_leg_and_a_self_hosted_gpu_leg(job: dict[str, Any]) -> None:
    by_name = legs(job)
    assert set(by_name) == {"cpu", "gpu"}
    assert by_name["cpu"]["runner"] == "ubuntu-latest" and by_name["cpu"]["gpu"] is False
    assert {"self-hosted", "gpu"} <= set(by_name["gpu"]["runner"]) and by_name["gpu"]["gpu"]
    assert job["runs-on"] == "${{ matrix.runner }}"
    assert job["strategy"]["fail-fast"] is False  # a broken GPU runner must not hide CPU results


def test_readme_has_the_two_commands() -> None:
    assert readme_commands()[:2] == ["bash scripts/dev.sh doctor", "bash scripts/dev.sh test"]


@pytest.mark.parametrize("leg_name", ["cpu", "gpu"])
def test_each_leg_runs_the_readme_commands(job: dict[str, Any], leg_name: str) -> None:
    ran = commands(job, legs(job)[leg_name])
    for command in readme_commands()[:2]:  # the quick start: doctor, then test
        if leg_name == "cpu":
            assert command in ran, f"the cpu leg must run `{command}` exactly as the README says"
        else:
            assert any(c == command or c.startswith(command + " ") for c in ran), command


def test_gpu_leg_is_gated_before_tests_and_runs_the_gpu_check(job: dict[str, Any]) -> None:
    ran = commands(job, legs(job)["gpu"])
    gate = next(i for i, c in enumerate(ran) if re.search(r"doctor --require cuda$", c))
    tests = next(i for i, c in enumerate(ran) if c.startswith("bash scripts/dev.sh test"))
    check = next(i for i, c in enumerate(ran) if c.startswith("bash scripts/gpu-check.sh"))
    assert gate < tests < check
    assert ran[tests].endswith("--devcheck-require cuda")
    assert len(shlex.split(ran[check])) == 4  # bash, the script, OUT_DIR, DATA_DIR
    assert not any("ruff" in c for c in ran)


def test_cpu_leg_lints_and_skips_gpu_only_steps(job: dict[str, Any]) -> None:
    ran = commands(job, legs(job)["cpu"])
    assert any(c.endswith("ruff check .") for c in ran)
    assert not any("gpu-check.sh" in c or "--require cuda" in c for c in ran)


def test_gpu_artefacts_are_uploaded_even_when_a_step_failed(job: dict[str, Any]) -> None:
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith(
        "actions/upload-artifact@")]
    assert len(uploads) == 1 and "always()" in uploads[0]["if"]
    assert evaluate(uploads[0]["if"], legs(job)["gpu"])
    assert not evaluate(uploads[0]["if"], legs(job)["cpu"])


def test_scripts_and_actions_referenced_exist(job: dict[str, Any]) -> None:
    for step in job["steps"]:
        for script in re.findall(r"bash (scripts/\S+)", step.get("run", "")):
            assert (ROOT / script).is_file(), script
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step["uses"]


def test_the_docs_snippet_is_a_valid_workflow_using_the_gate() -> None:
    snippets = fenced(ROOT / "docs" / "ci.md", "yaml", "yml")
    assert snippets, "docs/ci.md needs a ```yaml workflow snippet"
    snippet = load(snippets[0])
    steps = [s for j in snippet["jobs"].values() for s in j["steps"]]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "devcheck doctor --require cuda" in runs and "--devcheck-require cuda" in runs
    assert "--only-cpu" in runs or "--only-gpu" in runs
