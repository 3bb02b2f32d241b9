"""The CI workflow and the set-up entry point: a CPU leg, a GPU leg and a Windows job, each
running the README's commands.

The workflow is parsed, not run: the matrix, which steps apply to which leg (their ``if:``
conditions are evaluated for both legs), the order of the GPU gate, and that every command
the README tells a user to type is what CI types (bash on Linux, PowerShell on Windows), and
that ``.ci/run`` is the README's test command. The copy-pasteable snippet in docs/ci.md is
parsed too, so it cannot rot into invalid YAML. scripts/dev.py, the one set-up entry point
for both shells, is tested in-process with its side effects faked.
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


SETUP = re.compile(r"^(python3?|py) scripts/dev\.py ")


def readme_commands(*languages: str) -> list[str]:
    """The README's set-up-and-run commands (``python3 scripts/dev.py TASK``), in order."""
    languages = languages or ("bash", "sh", "shell", "console")
    lines = [ln.strip().removeprefix("$ ") for body in fenced(ROOT / "README.md", *languages)
             for ln in body.splitlines()]
    return list(dict.fromkeys(ln for ln in lines if SETUP.match(ln)))


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
    assert readme_commands() == ["python3 scripts/dev.py doctor", "python3 scripts/dev.py test"]


def test_readme_has_the_same_two_commands_for_powershell() -> None:
    assert readme_commands("powershell") == ["python scripts/dev.py doctor",
                                             "python scripts/dev.py test"]


def test_ci_run_is_exactly_the_readme_test_command() -> None:
    """CI runs `bash .ci/run` on a fresh clone: it must be what the README tells a user."""
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[-1] == "exec " + readme_commands()[1]
    assert all(ln.startswith(("set ", "cd ", "exec ")) for ln in lines)  # nothing else runs


def test_readme_quotes_work_in_every_shell() -> None:
    """'.[test]' is POSIX-only quoting: PowerShell passes the quotes through in cmd.exe."""
    text = (ROOT / "README.md").read_text()
    assert "'.[test]'" not in text and 'pip install -e ".[test]"' in text


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
    tests = next(i for i, c in enumerate(ran) if c.startswith("python3 scripts/dev.py test"))
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


def test_scripts_and_actions_referenced_exist(workflow: dict[str, Any]) -> None:
    for step in (s for j in workflow["jobs"].values() for s in j["steps"]):
        for script in re.findall(r"(?:bash|python3?) (scripts/\S+)", step.get("run", "")):
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


# -- the Windows job: the learner's platform, in PowerShell ---------------------------------
@pytest.fixture(scope="module")
def windows(workflow: dict[str, Any]) -> dict[str, Any]:
    jobs = [j for j in workflow["jobs"].values() if j.get("runs-on") == "windows-latest"]
    assert len(jobs) == 1, "one windows-latest job expected"
    return jobs[0]


def test_windows_job_runs_the_powershell_readme_commands(windows: dict[str, Any]) -> None:
    assert windows["defaults"]["run"]["shell"] == "pwsh"
    ran = commands(windows, {})
    doctor, test = readme_commands("powershell")
    assert doctor in ran and test in ran and ran.index(doctor) < ran.index(test)
    assert ran[-1] == test


def test_windows_job_uses_nothing_posix_only(windows: dict[str, Any]) -> None:
    ran = " ".join(commands(windows, {}))
    for posix in ("bash ", "sudo ", "apt-get", ".venv/bin/", "source "):
        assert posix not in ran, posix
    assert not any(s.get("if") for s in windows["steps"])  # no matrix conditions to misread


def test_windows_job_fetches_the_data_before_the_tests(windows: dict[str, Any]) -> None:
    ran = commands(windows, {})
    fetch = next(i for i, c in enumerate(ran) if "locate('data'" in c)
    assert fetch < ran.index(readme_commands("powershell")[1])
    assert ".venv\\Scripts\\python.exe" in ran[fetch]


# -- scripts/dev.py: the set-up entry point for both shells ----------------------------------
@pytest.fixture
def dev(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """scripts/dev.py loaded as a module, every command it would run recorded instead."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "scripts" / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ran: list[list[str]] = []
    module.ran = ran

    def fake_run(cmd: list[Any], **kwargs: Any) -> int:
        ran.append([str(c) for c in cmd])
        if cmd[1:3] == ["-m", "venv"]:
            python = module.venv_python(Path(cmd[3]))
            python.parent.mkdir(parents=True)
            python.touch()
        return 0

    monkeypatch.setattr(module, "run", fake_run)
    monkeypatch.setattr(module, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(module, "STAMP", tmp_path / ".venv" / ".devcheck-install-stamp")
    monkeypatch.setattr(module, "MIRROR", tmp_path / "no-mirror")
    monkeypatch.setattr(module, "is_root", lambda: False)
    return module


def test_dev_py_fresh_clone_creates_venv_installs_then_runs_doctor(dev: Any) -> None:
    assert dev.main(["doctor", "--json"]) == 0
    python = str(dev.venv_python())
    assert dev.ran[0][1:] == ["-m", "venv", str(dev.VENV)]
    assert dev.ran[1] == [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "-e", ".[test]"]  # a list: no shell, no quoting, any OS
    assert dev.ran[-1] == [python, "-m", "devcheck", "doctor", "--json"]
    dev.ran.clear()
    assert dev.main(["test", "-k", "x"]) == 0  # second time: no venv, no install
    assert [c for c in dev.ran if "venv" in c or "pip" in c] == []
    assert dev.ran[-1] == [python, "-m", "pytest", "-k", "x"]


def test_dev_py_reinstalls_when_pyproject_changes(dev: Any, tmp_path: Path) -> None:
    stamp, pyproject = tmp_path / "stamp", tmp_path / "pyproject.toml"
    pyproject.write_text("")
    assert dev.needs_install(stamp, pyproject)
    stamp.touch()
    import os

    os.utime(pyproject, (stamp.stat().st_mtime + 10,) * 2)
    assert dev.needs_install(stamp, pyproject)
    os.utime(stamp, (pyproject.stat().st_mtime + 10,) * 2)
    assert not dev.needs_install(stamp, pyproject)


def test_dev_py_finds_the_windows_venv_layout(dev: Any, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setattr(dev.os, "name", "nt")
    assert dev.venv_python(tmp_path) == tmp_path / "Scripts" / "python.exe"
    monkeypatch.setattr(dev.os, "name", "posix")
    assert dev.venv_python(tmp_path) == tmp_path / "bin" / "python"


def test_dev_py_installs_the_debian_mirror_only_as_root_with_apt(
        dev: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(dev, "is_root", lambda: False)
    dev.setup_data()
    assert dev.ran == []
    assert "no Fashion-MNIST mirror" in capsys.readouterr().err
    monkeypatch.setattr(dev, "is_root", lambda: True)
    monkeypatch.setattr(dev.shutil, "which", lambda name: "/usr/bin/apt-get")
    dev.setup_data()
    assert dev.ran == [["/usr/bin/apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]]


def test_dev_py_unknown_task_is_one_line_exit_2(dev: Any,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert dev.main(["tset"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown task 'tset'" in err[0] and "doctor, test, setup" in err[0]
    assert dev.ran == []


def test_dev_sh_hands_everything_to_dev_py() -> None:
    text = (ROOT / "scripts" / "dev.sh").read_text()
    assert 'exec "$py" scripts/dev.py "$@"' in text
