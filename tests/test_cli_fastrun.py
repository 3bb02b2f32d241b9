"""``devcheck run``'s click-free fast path: same meaning as click, or no opinion at all.

:func:`devcheck.cli.fastrun.parse` may only skip click's import: for every line it accepts,
click must parse the same values; every line it declines (``None``) goes through click.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from devcheck.cli import fastrun

ACCEPTED = [
    ["--", "python", "-c", "pass"],
    ["python", "-c", "pass"],
    ["-i", "1", "--", "echo", "hi"],
    ["-i0.5", "echo"],
    ["--interval", "0.01", "--out", "o", "--json", "--no-plot", "--", "x", "--json"],
    ["--interval=3600", "--out=o", "--", "x"],
    ["--json", "x", "-i", "9"],  # options after the command are the command's
    ["--", "--weird-program"],
]
DECLINED = [
    [],
    ["--"],
    ["--help"],
    ["-h"],
    ["--interval", "nan", "--", "x"],
    ["--interval", "inf", "x"],
    ["-i", "0", "x"],
    ["-i", "3601", "x"],
    ["-i", "abc", "x"],
    ["-i"],
    ["--out"],
    ["--out", "", "x"],
    ["--json", "--json", "x"],
    ["--json=1", "x"],
    ["--bogus", "x"],
    ["-x", "x"],
]


@pytest.mark.parametrize("args", ACCEPTED, ids=lambda a: " ".join(a) or "<empty>")
def test_accepted_lines_mean_what_click_says(args: list[str], monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    fast = fastrun.parse(args)
    assert fast is not None
    seen: list[fastrun.RunArgs] = []
    monkeypatch.setattr(fastrun, "execute", seen.append)
    from devcheck.cli.group import cli

    result = CliRunner().invoke(cli, ["run", *args])
    assert result.exit_code == 0, result.output
    assert seen == [fast]


@pytest.mark.parametrize("args", DECLINED, ids=lambda a: " ".join(a) or "<empty>")
def test_declined_lines_are_left_to_click(args: list[str]) -> None:
    assert fastrun.parse(args) is None


def test_out_naming_a_file_is_left_to_click(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert fastrun.parse(["--out", str(f), "x"]) is None
    assert fastrun.parse(["--out", str(tmp_path), "x"]) == fastrun.RunArgs(
        ("x",), out_dir=tmp_path)


def _run_main(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = ("import sys\nfrom devcheck.cli import main\n"
            f"sys.argv = ['devcheck', *{args!r}]\n"
            "try:\n    main()\nfinally:\n"
            "    sys.stderr.write('click imported: %s\\n' % ('click' in sys.modules))\n")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_a_well_formed_run_never_imports_click(tmp_path: Path) -> None:
    proc = _run_main(["run", "--no-plot", "--out", "o", "--", sys.executable, "-c",
                      "import sys; print('job'); sys.exit(3)"], tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "job\n"
    assert "click imported: False" in proc.stderr
    assert (tmp_path / "o" / "summary.json").is_file()
    # --no-plot: the summary lists what was written, and promises no plot
    assert "output folder: o (timeline.jsonl, summary.json)" in proc.stderr
    assert not (tmp_path / "o" / "timeline.png").exists()


def test_a_bad_line_gets_clicks_one_line_error(tmp_path: Path) -> None:
    proc = _run_main(["run", "-i", "nan", "--", "true"], tmp_path)
    assert proc.returncode == 2
    assert "'nan' is not a finite number" in proc.stderr
    assert "click imported: True" in proc.stderr


def test_fast_path_output_folder_error_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("x")
    proc = _run_main(["run", "--out", str(blocker / "sub"), "--", "true"], tmp_path)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("click imported")]
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write output folder")
    assert "Traceback" not in proc.stderr
