"""Every command the docs tell a user to type runs as written, offline, on a fresh clone.

Commands come from README.md and docs/*.md (fenced ``bash``/``sh``/``shell``/``console``/
``powershell`` blocks; in ``console`` blocks only the ``$ `` lines) and from the docstrings of
examples/*.py (indented lines starting with ``python``, ``softmax`` or ``devcheck``). Each runs
in a scratch directory laid out like a clone (``examples/``, ``benchmarks/``, ``scripts/``,
``docs/`` copied, ``./data`` holding Fashion-MNIST as the first ``softmax train`` leaves it,
and the small files the examples name: ``train.py``, ``train.sh``, ``src/``, ``error.txt``,
``ci.log``), with ``$SOFTMAX_OFFLINE=1`` and the venv's commands first on PATH. A file's
commands run in their order, so ``softmax predict`` finds the checkpoint the ``softmax
train`` above it wrote; a command with a pipe or a redirection runs through bash.

What "as written" allows, all of it explicit below:
- synopsis notation is filled in: the ``[...]`` parts are all left out, then all put in,
  and the upper-case placeholders (``ID``, ``D``, ``S``) take the values in PLACEHOLDERS;
- long runs are shortened with their own options (SHORTEN): ``softmax train --book`` gets
  ``--epochs 1``, the learner's scripts ``--epochs 1 --limit-batches 20``, the benchmark its
  smallest settings;
- documented non-zero exits are accepted (EXIT_CODES: ``devcheck lint`` exits 1 on findings);
  commands that run until Ctrl-C get one after their first line of output (UNTIL_CTRL_C);
- commands that need CUDA must, without it, fail cleanly with the documented exit code (and
  one line, for errors): NEEDS_CUDA;
- commands that cannot run here at all match ILLUSTRATIVE, each with its reason; the list is
  short and every pattern must still match a documented command.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "powershell"}
PROGRAMS = ("python", "python3", "py", "softmax", "devcheck", "bash", "torchrun")
DOCSTRING_PROGRAMS = ("python ", "softmax ", "devcheck ")
SHELL_OPERATORS = re.compile(r"\s(\||&&|>)\s")

# Commands that cannot run on this machine as a test, by pattern, and why. Keep it short: a
# command that can run belongs in the test (shortened if slow); each pattern must still
# match a documented command.
ILLUSTRATIVE = [
    (re.compile(r"^(python3?|py) scripts/dev\.py (doctor|test)$"),
     "the set-up itself (venv, pip, apt) and the whole suite: CI runs exactly these on a fresh "
     "clone, Linux and Windows (tests/test_workflow.py checks that)"),
    (re.compile(r"^pbpaste \|"), "macOS clipboard; `devcheck explain error.txt` is tested"),
    (re.compile(r"^bash scripts/gpu-check\.sh "), "needs an NVIDIA GPU: the CI gpu leg runs it"),
    (re.compile(r"--nnodes 2"), "needs a second machine (HOST:29400)"),
    (re.compile(r"--nproc-per-node 8 .*--device cuda"), "needs 8 GPUs"),
]
# Values for the upper-case placeholders of synopsis lines.
PLACEHOLDERS = {"ID": "numpy_on_requires_grad", "D": "cpu", "S": "120"}
# Options appended to slow commands (argparse and click: the last occurrence wins).
SHORTEN = [
    (re.compile(r"^softmax train .*--book"), ["--epochs", "1"]),
    (re.compile(r"^python3? examples/learner_softmax(_fixed)?\.py"),
     ["--epochs", "1", "--limit-batches", "20"]),
    (re.compile(r"^python3? benchmarks/bench_train\.py"),
     ["--repeats", "1", "--epochs", "2", "--book-epochs", "1"]),
]
# Exit codes the docs give for a command's normal outcomes other than 0.
EXIT_CODES = [
    (re.compile(r"^devcheck lint"), {0, 1}),  # docs/lint.md: 1 = findings
]
# Commands that need CUDA: without it, the documented exit code, and whether stderr must be
# one line (an error) rather than a report on stdout.
NEEDS_CUDA = [
    (re.compile(r"^devcheck doctor --require cuda"), 1, False),
    (re.compile(r"^softmax train .*--device cuda"), 1, True),
]
# Commands that run until Ctrl-C: interrupted after a few seconds, they must end cleanly.
UNTIL_CTRL_C = re.compile(r"^devcheck gpus --watch")


def illustrative(text: str) -> str | None:
    return next((why for pattern, why in ILLUSTRATIVE if pattern.search(text)), None)


def scratch_files(work: Path) -> None:
    """The files the docs' examples name (``train.py``, ``src/``, ``error.txt``...), small
    and real, so ``devcheck run -- python train.py`` or ``devcheck lint src/`` have input."""
    (work / "train.py").write_text(textwrap.dedent("""\
        import argparse

        import torch

        parser = argparse.ArgumentParser()
        parser.add_argument("--epochs", type=int, default=1)
        args = parser.parse_args()
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        W = torch.zeros(784, 10, device=device, requires_grad=True)
        for epoch in range(args.epochs):
            X = torch.rand(256, 784, device=device)
            y = torch.randint(0, 10, (256,), device=device)
            loss = torch.nn.functional.cross_entropy(X @ W, y)
            loss.backward()
            with torch.no_grad():
                W -= 0.1 * W.grad
                W.grad.zero_()
            print(f"epoch {epoch + 1}: loss {loss.item():.3f} on {device}")
        """))
    (work / "train.sh").write_text("#!/usr/bin/env bash\nexec python train.py --epochs 2\n")
    (work / "src").mkdir()
    shutil.copy(ROOT / "examples" / "learner_softmax.py", work / "src" / "model.py")
    for name in ("notebook.ipynb", "nb.ipynb"):
        shutil.copy(ROOT / "examples" / "softmax_live.ipynb", work / name)
    traceback = ROOT / "tests" / "data" / "explain" / "learner_windows_notebook.txt"
    shutil.copy(traceback, work / "error.txt")  # the learner's own traceback
    (work / "ci.log").write_text("collected 12 items\n...\n" + traceback.read_text()
                                 + "\n=== 1 failed, 11 passed in 3.2s ===\n")


@dataclass(frozen=True)
class Command:
    source: str  # file:line, for messages
    text: str  # as written in the docs (comment removed)


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` that is outside quotes (shlex knows where quotes are)."""
    out: list[str] = []
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).strip()


def markdown_commands(path: Path) -> list[Command]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        if lang not in SHELL_LANGUAGES:
            continue
        first = text.count("\n", 0, match.start()) + 2
        for offset, raw in enumerate(body.replace("\\\n", " ").splitlines()):
            line = raw.strip()
            if lang == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = _strip_comment(line)
            if line and any(part.split()[:1] and part.split()[0] in PROGRAMS
                            for part in line.split("|")):
                found.append(Command(f"{path.relative_to(ROOT)}:{first + offset}", line))
    return found


def docstring_commands(path: Path) -> list[Command]:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return [Command(f"{path.relative_to(ROOT)} docstring", _strip_comment(ln.strip()))
            for ln in doc.splitlines()
            if ln.startswith("    ") and ln.strip().startswith(DOCSTRING_PROGRAMS)]


def all_sources() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "examples").glob("*.py"))]


def commands_of(path: Path) -> list[Command]:
    return docstring_commands(path) if path.suffix == ".py" else markdown_commands(path)


def expand(text: str) -> list[str]:
    """Synopsis to runnable commands: every ``[...]`` left out, then every one put in (each
    option runs at least once, without the 2**n product); placeholders filled in."""
    optional = re.compile(r"\s*\[([^\]]+)\]")
    variants = [optional.sub("", text), optional.sub(lambda m: " " + m.group(1), text)]
    filled = [" ".join(PLACEHOLDERS.get(w, w) for w in v.split()) for v in variants]
    return list(dict.fromkeys(filled))


def shorten(text: str) -> list[str]:
    for pattern, extra in SHORTEN:
        if pattern.search(text):
            return shlex.split(text) + extra
    return shlex.split(text)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# -- the extraction itself ---------------------------------------------------------------------
def test_commands_are_found_in_every_kind_of_source() -> None:
    texts = {c.text for p in all_sources() for c in commands_of(p)}
    assert "devcheck doctor" in texts  # README bash block
    assert "softmax train --epochs 10 --device cpu" in texts  # comment stripped
    assert "python scripts/dev.py doctor" in texts  # a powershell block
    assert "python examples/learner_softmax.py --lr 100" in texts  # an example docstring
    assert not any(t.startswith("$") or "Findings" in t for t in texts)  # console output


def test_expand_fills_synopses() -> None:
    assert expand("devcheck gpus [--json]") == ["devcheck gpus", "devcheck gpus --json"]
    assert expand("devcheck pitfalls run ID [--device D] [--json]") == [
        "devcheck pitfalls run numpy_on_requires_grad",
        "devcheck pitfalls run numpy_on_requires_grad --device cpu --json"]
    assert expand("devcheck doctor") == ["devcheck doctor"]


def test_the_exceptions_are_few_and_each_still_matches_the_docs() -> None:
    """A stale exception hides nothing; a growing list hides drift."""
    texts = [c.text for p in all_sources() for c in commands_of(p)]
    assert len(ILLUSTRATIVE) <= 6
    for pattern, why in ILLUSTRATIVE:
        assert any(pattern.search(t) for t in texts), f"stale exception: {pattern.pattern}"
        assert why.strip()


# -- running them ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clone(fashion_root: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch directory laid out like a fresh clone whose data is already unpacked."""
    work = tmp_path_factory.mktemp("clone")
    for name in ("examples", "benchmarks", "scripts", "docs", "samples"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, work / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    try:
        (work / "data").symlink_to(fashion_root, target_is_directory=True)
    except OSError:  # Windows without symlink rights: copy the unpacked files
        shutil.copytree(fashion_root, work / "data")
    scratch_files(work)
    return work


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTMAX_")}
    env.update(SOFTMAX_OFFLINE="1", PYTHONIOENCODING="utf-8", MPLBACKEND="Agg",
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    return env


def run_one(text: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run one command as written (through the shell when it pipes or redirects)."""
    env = environment()
    if SHELL_OPERATORS.search(text):
        if sys.platform == "win32":
            pytest.skip(f"`{text}` pipes into POSIX tools")
        argv = ["bash", "-c", text]
    else:
        argv = shorten(text)
    exe = shutil.which(argv[0], path=env["PATH"])
    assert exe, f"{argv[0]} is not on PATH"
    shown = text if argv[0] == "bash" and argv[1] == "-c" else " ".join(argv)
    if UNTIL_CTRL_C.search(text):
        return interrupted([exe, *argv[1:]], cwd, env), shown
    return subprocess.run([exe, *argv[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900, encoding="utf-8", errors="replace"), shown


def interrupted(argv: list[str], cwd: Path, env: dict[str, str],
                ) -> subprocess.CompletedProcess[str]:
    """Start, wait for the first line of output, then Ctrl-C (SIGINT) as a user would."""
    import signal
    import threading

    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8")
    watchdog = threading.Timer(300, proc.kill)  # never hang the suite on a silent command
    watchdog.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGINT if sys.platform != "win32" else signal.CTRL_C_EVENT)
        out, err = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
    return subprocess.CompletedProcess(argv, proc.returncode, first + out, err)


def check(command: Command, shown: str, proc: subprocess.CompletedProcess[str],
          has_cuda: bool) -> str | None:
    """None when the command behaved as documented; else what went wrong, in one line."""
    where = f"{command.source}: `{shown}`"
    expected = next((codes for pattern, codes in EXIT_CODES if pattern.search(command.text)),
                    {0})
    if UNTIL_CTRL_C.search(command.text):
        expected = {0, 130, -2}  # Ctrl-C ends it: 0, 130, or death by SIGINT (-2), no traceback
    for pattern, code, one_line in NEEDS_CUDA:
        if pattern.search(command.text) and not has_cuda:
            expected = {code}
            if one_line and len(proc.stderr.strip().splitlines()) != 1:
                return f"{where} without CUDA must fail in one line; stderr: {proc.stderr!r}"
    if proc.returncode not in expected:
        return (f"{where} exited {proc.returncode}, expected {sorted(expected)}; stderr: "
                f"{proc.stderr[-800:]!r}")
    if "Traceback (most recent call last)" in proc.stderr:
        return f"{where} printed a traceback: {proc.stderr[-800:]!r}"
    return None


@pytest.mark.parametrize("source", all_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_run_as_written(source: Path, clone: Path) -> None:
    commands = [c for c in commands_of(source) if not illustrative(c.text)]
    if not commands:
        pytest.skip(f"{source.name}: every command in it is illustrative (see ILLUSTRATIVE)")
    has_cuda = cuda_available()
    failures = []
    for command in commands:
        for text in expand(command.text):
            if text not in _RAN:  # the same command in two files runs once
                _RAN[text] = run_one(text, clone)
            proc, shown = _RAN[text]
            problem = check(command, shown, proc, has_cuda)
            if problem:
                failures.append(problem)
    assert not failures, "\n".join(failures)


_RAN: dict[str, tuple[subprocess.CompletedProcess[str], str]] = {}
