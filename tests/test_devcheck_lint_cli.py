"""``devcheck lint`` end to end: output, exit codes, paths, parse errors, --fix and --diff."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from devcheck.cli import cli
from devcheck.lint import RULES, lint_file

BAD = "import torch\n\nstate = torch.load('m.pt')\nfor X, y in loader:\n    X.to(device)\n"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["lint", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text(BAD)
    (tmp_path / "pkg" / "good.py").write_text("import torch\nx = torch.ones(3)\n")
    for skipped in (".venv/lib", "build", "__pycache__", ".git", "node_modules"):
        (tmp_path / skipped).mkdir(parents=True)
        (tmp_path / skipped / "junk.py").write_text(BAD)
    return tmp_path


def test_text_output_is_ruff_style_with_fix_lines_and_summary(project: Path) -> None:
    code, out = run(str(project))
    assert code == 1
    lines = out.splitlines()
    loc = f"{project}/pkg/bad.py:3:9: gpu_checkpoint_on_cpu [*] torch.load('m.pt') has no"
    assert any(ln.startswith(loc) for ln in lines), out
    assert any(ln.startswith("    fix: ") for ln in lines)
    assert f"{project}/pkg/bad.py:5:5: tensor_to_not_inplace [*]" in out
    assert "junk.py" not in out  # .venv, build, __pycache__, .git, node_modules skipped
    assert lines[-1].startswith("Found 3 findings (3 fixable with --fix) in 1 of 2 files.")


def test_list_rules() -> None:
    code, out = run("--list-rules")
    assert code == 0 and len(out.splitlines()) == len(RULES) + 1
    assert "gpu_checkpoint_on_cpu" in out and " [*] torch.load without map_location" in out


def test_no_findings_exit_0(project: Path) -> None:
    code, out = run(str(project / "pkg" / "good.py"))
    assert (code, out.strip()) == (0, "No findings in 1 file.")


def test_select_and_ignore(project: Path) -> None:
    code, out = run(str(project / "pkg"), "--select", "tensor_to_not_inplace,unstable_softmax")
    assert code == 1 and "tensor_to_not_inplace" in out and "gpu_checkpoint" not in out
    code, out = run(str(project / "pkg"), "--ignore", "gpu_checkpoint_on_cpu",
                    "--ignore", "torch_load_weights_only,tensor_to_not_inplace")
    assert code == 0


def test_unknown_rule_and_missing_path_are_usage_errors(project: Path) -> None:
    code, out = run(str(project), "--select", "hidden_host_sinc")
    assert code == 2 and "unknown rule id 'hidden_host_sinc'" in out and \
        "hidden_host_sync" in out and "Traceback" not in out
    code, out = run(str(project / "nope.py"))
    assert code == 2 and "nope.py' does not exist" in out and "Traceback" not in out


def test_unparsable_file_is_reported_and_the_rest_still_checked(project: Path) -> None:
    (project / "pkg" / "broken.py").write_text("def f(:\n    pass\n")
    (project / "pkg" / "latin.py").write_bytes(b"x = '\xe9'\n")
    (project / "pkg" / "broken.ipynb").write_text("{not json")
    code, out = run(str(project / "pkg"))
    assert code == 2
    assert f"{project}/pkg/broken.py:1:7: error: cannot parse" in out
    assert "latin.py: error: cannot decode" in out
    assert "broken.ipynb: error: not a Jupyter notebook" in out
    assert "gpu_checkpoint_on_cpu" in out  # bad.py still checked
    assert "3 files could not be read, parsed or written (exit status 2)" in out


def test_json_output(project: Path) -> None:
    code, out = run(str(project / "pkg"), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["files_checked"] == 2 and doc["summary"]["exit_code"] == 1
    f = doc["findings"][0]
    assert set(f) >= {"rule", "path", "line", "col", "end_line", "end_col", "message", "fix",
                      "fixable", "cell", "pitfall"}
    assert f["pitfall"] == f"devcheck pitfalls show {f['rule']}"
    assert doc["diffs"] == []
    code, out = run(str(project / "pkg"), "--json", "--diff")
    assert "+state = torch.load('m.pt', map_location='cpu'" in json.loads(out)["diffs"][0]
    assert doc["summary"]["by_rule"] == {"gpu_checkpoint_on_cpu": 1,
                                         "tensor_to_not_inplace": 1,
                                         "torch_load_weights_only": 1}


def test_diff_changes_nothing_and_fix_round_trips(project: Path) -> None:
    bad = project / "pkg" / "bad.py"
    bad.chmod(0o755)
    code, out = run(str(bad), "--diff")
    assert code == 1 and bad.read_text() == BAD
    assert "-state = torch.load('m.pt')" in out
    assert "+state = torch.load('m.pt', map_location='cpu', weights_only=True)" in out
    assert "+    X = X.to(device)" in out
    code, out = run(str(bad), "--fix")
    assert code == 0, out
    assert "Fixed 3 findings in 1 file." in out
    fixed = bad.read_text()
    ast.parse(fixed)
    assert fixed == BAD.replace("torch.load('m.pt')", "torch.load('m.pt', map_location='cpu', "
                                "weights_only=True)").replace("    X.to(", "    X = X.to(")
    assert bad.stat().st_mode & 0o777 == 0o755
    assert lint_file(bad, RULES).findings == []


def test_fix_keeps_trailing_commas_comments_and_crlf(tmp_path: Path) -> None:
    src = ("import torch\r\n# 检查点\r\nstate = torch.load(\r\n    path,  # where\r\n)\r\n"
           "x.cuda()  # noqa: no_cpu_fallback\r\n")
    f = tmp_path / "crlf.py"
    f.write_bytes(src.encode("utf-8"))
    code, out = run(str(f), "--fix")
    data = f.read_bytes().decode("utf-8")
    assert data == src.replace("    path,", "    path, map_location=\"cpu\", weights_only=True,"
                               ).replace("x.cuda()", "x = x.cuda()")
    ast.parse(data)
    assert code == 0, out


def _notebook(cells: list[str]) -> dict[str, object]:
    return {"cells": [{"cell_type": "code", "execution_count": 3, "id": f"c{i}",
                       "metadata": {"tags": ["keep"]},
                       "outputs": [{"output_type": "stream", "name": "stdout",
                                    "text": ["kept\n"]}],
                       "source": c.splitlines(keepends=True)} for i, c in enumerate(cells)],
            "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4,
            "nbformat_minor": 5}


def test_notebook_fix_writes_valid_json_and_keeps_outputs(tmp_path: Path) -> None:
    nb = _notebook(["%matplotlib inline\nimport torch\n", "!pip list\nX = torch.ones(2)\n"
                    "X.to('cpu')\nck = torch.load('a.pt')\n"])
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    code, out = run(str(path))
    assert code == 1
    assert f"{path}:cell 2:3:1: tensor_to_not_inplace" in out
    assert f"{path}:cell 2:4:6: gpu_checkpoint_on_cpu" in out
    code, out = run(str(path), "--diff")
    assert f"--- a/{path}:cell 2" in out and "+X = X.to('cpu')" in out
    code, out = run(str(path), "--fix")
    assert code == 0, out
    after = json.loads(path.read_text())
    assert after["cells"][1]["source"] == ["!pip list\n", "X = torch.ones(2)\n",
                                           "X = X.to('cpu')\n",
                                           "ck = torch.load('a.pt', map_location='cpu', "
                                           "weights_only=True)\n"]
    assert after["cells"][0] == nb["cells"][0]  # type: ignore[index]
    assert after["cells"][1]["outputs"] == nb["cells"][1]["outputs"]  # type: ignore[index]
    assert after["metadata"] == nb["metadata"]


def test_unparsable_notebook_cell_is_reported_and_other_cells_checked(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(_notebook(["def broken(:\n", "import torch\ntorch.load(p)\n"])))
    code, out = run(str(path), "--select", "gpu_checkpoint_on_cpu")
    assert code == 2
    assert f"{path}:cell 1:1:12: error: cannot parse" in out
    assert f"{path}:cell 2:2:1: gpu_checkpoint_on_cpu" in out


def test_lint_never_imports_torch(project: Path) -> None:
    code = ("import sys\nfrom devcheck.cli import cli\n"
            "try:\n    cli(['lint', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'devcheck lint imported torch'\n")
    subprocess.run([sys.executable, "-c", code, str(project)], check=True,
                   capture_output=True, timeout=60)


def test_hostile_inputs_are_reported_not_crashed_on(tmp_path: Path) -> None:
    (tmp_path / "deep.py").write_text("x = a" + ".b" * 20000 + "\n")
    (tmp_path / "nul.py").write_bytes(b"x = 1\x00\n")
    (tmp_path / "empty.py").write_text("")
    (tmp_path / "list.ipynb").write_text("[]")
    (tmp_path / "nb3.ipynb").write_text(json.dumps({"worksheets": [], "nbformat": 3}))
    (tmp_path / "nocells.ipynb").write_text(json.dumps(
        {"cells": [{"cell_type": "code", "source": 7}, "junk"], "nbformat": 4}))
    (tmp_path / "intline.ipynb").write_text(json.dumps(
        {"cells": [{"cell_type": "code", "source": ["import torch\n", 5]}], "nbformat": 4}))
    code, out = run(str(tmp_path))
    assert code == 2 and "Traceback" not in out
    assert "deep.py: error: cannot parse: nested too deeply" in out
    assert "nul.py: error: cannot parse" in out
    assert "list.ipynb: error: not a Jupyter notebook" in out
    assert "nb3.ipynb: error: not a Jupyter notebook" in out
    assert "list.ipynb: error: not a Jupyter notebook (the document is a JSON list" in out
    assert "nocells.ipynb:cell 1: error: not a Jupyter notebook: this cell's 'source'" in out
    assert "intline.ipynb:cell 1: error: not a Jupyter notebook" in out
    assert "6 files could not be read, parsed or written" in out and "7 files" in out


def test_fix_leaves_a_read_only_file_alone(tmp_path: Path) -> None:
    """The rename of an atomic write would replace a file its owner made read-only, and
    root ignores the mode: --fix must refuse, like ruff and black do."""
    bad = tmp_path / "bad.py"
    bad.write_text(BAD)
    bad.chmod(0o444)
    code, out = run(str(bad), "--fix")
    assert code == 2 and "Traceback" not in out
    assert f"cannot write fixed file {bad}: it is read-only" in out and "chmod u+w" in out
    assert bad.read_text() == BAD


def test_fix_that_cannot_write_is_reported(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from devcheck import fileio

    def full_disk(path: object, data: bytes, what: str = "output") -> Path:
        raise fileio.OutputError(what, str(path), "the disk is full (No space left on device)",
                                 "free some space")

    monkeypatch.setattr(fileio, "atomic_write_bytes", full_disk)
    bad = tmp_path / "bad.py"
    bad.write_text(BAD)
    code, out = run(str(bad), "--fix")
    assert code == 2 and "Traceback" not in out
    assert f"{bad}: error: cannot write fixed file {bad}: the disk is full" in out
    assert bad.read_text() == BAD and "gpu_checkpoint_on_cpu" in out


@pytest.mark.skipif(sys.platform == "win32", reason="process substitution is POSIX")
def test_a_pipe_is_linted_not_silently_skipped(tmp_path: Path) -> None:
    """`devcheck lint <(git show HEAD:x.py)` said "No findings in 0 files", exit 0."""
    proc = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m devcheck lint <(printf '%s')" % BAD.replace(
            "'", "'\\''").replace("%", "%%")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "/dev/fd/" in proc.stdout and "gpu_checkpoint_on_cpu" in proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and devices are POSIX")
def test_devices_and_silent_fifos_are_errors_not_empty_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devcheck.lint import source

    monkeypatch.setattr(source, "PIPE_IDLE_S", 0.5)
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    code, out = run(str(fifo), os.devnull)
    assert code == 2
    assert f"{fifo}: error: cannot read: the pipe gave no data for 0.5 s" in out
    assert f"{os.devnull}: error: cannot read: a character device, not a source file" in out


def test_a_huge_file_is_skipped_with_its_size(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's parser needed 3.2 GB for a 20 MB generated file."""
    from devcheck.lint import source

    monkeypatch.setattr(source, "MAX_FILE_BYTES", 1000)
    (tmp_path / "gen.py").write_text("x = 1\n" * 400)
    (tmp_path / "bad.py").write_text(BAD)
    code, out = run(str(tmp_path))
    assert code == 2
    assert "gen.py: error: cannot read: 2.3 KB is over the 1.0 KB devcheck lints per file" in out
    assert "bad.py:" in out  # the rest was still checked
