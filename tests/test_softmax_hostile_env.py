"""`softmax` in a hostile environment (issue 9): a broken torch, a bogus $MPLBACKEND.

These defects live at the process boundary (what `import torch` or `import matplotlib` does
in a fresh interpreter, what the shell sees), so each test runs `python -m softmax` in a
subprocess. A fake `torch` package first on PYTHONPATH stands for the broken install, as in
the hostile audit (scripts/audit/cases_env.py); those runs never import the real torch and
take well under a second each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
FIX = "`pip install --force-reinstall torch` usually repairs it"

FAKE_TORCHES = {
    "importerror": ("raise ImportError('libcudnn.so.9: cannot open shared object file: "
                    "No such file or directory')\n",
                    "(ImportError: libcudnn.so.9: cannot open shared object file"),
    "runtimeerror": ("raise RuntimeError('CUDA driver initialization failed, you might not "
                     "have a CUDA gpu.')\n", "(RuntimeError: CUDA driver initialization"),
    "sysexit0": ("raise SystemExit(0)\n", "(SystemExit(0) raised by its own code)"),
    "kbint": ("raise KeyboardInterrupt\n",
              "(KeyboardInterrupt raised by its own code, not by Ctrl-C)"),
    "escape": ("raise ImportError('libcudnn.so.9\\x1b[2J\\x1b]0;pwned\\x07\\nFAKE-LINE: ok')\n",
               "(ImportError: libcudnn.so.9\\x1b[2J\\x1b]0;pwned\\x07)"),
    "segv": ("import ctypes\nctypes.string_at(0)\n", ""),
    "sleep": ("import sys, time\nsys.stderr.write('IMPORTING\\n')\nsys.stderr.flush()\n"
              "time.sleep(60)\n", ""),
}


def fake_torch_env(tmp_path: Path, kind: str, **extra: str) -> dict[str, str]:
    pkg = tmp_path / "ft" / "torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_TORCHES[kind][0])
    path = os.pathsep.join(p for p in (str(tmp_path / "ft"), os.environ.get("PYTHONPATH"))
                           if p)
    return dict(os.environ, PYTHONPATH=path, SOFTMAX_OFFLINE="1", **extra)


def softmax(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softmax", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


TRAIN = ("train", "--epochs", "1", "--device", "cpu", "--checkpoint-dir", "ck")


# -- a broken torch: one line naming torch, what its import raised, and the fix -------------
@pytest.mark.parametrize("kind", ["importerror", "runtimeerror", "sysexit0", "kbint",
                                  "escape"])
def test_a_broken_torch_is_one_line_exit_1(tmp_path: Path, kind: str) -> None:
    """Was: a 34-line traceback from softmax/devices.py (ImportError, RuntimeError); exit 0
    having trained nothing (SystemExit(0)); "Aborted!" and nothing else (KeyboardInterrupt)."""
    proc = softmax(tmp_path, fake_torch_env(tmp_path, kind), *TRAIN)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: cannot import torch " + FAKE_TORCHES[kind][1]), lines[0]
    assert "this torch installation is broken" in lines[0] and "`devcheck doctor`" in lines[0]
    assert lines[0].endswith(FIX) and "\x1b" not in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "ck").exists()  # no work done


@pytest.mark.parametrize("args", [("predict", "--out", "p.png"),
                                  ("train", "--book", "--epochs", "1", "--checkpoint-dir",
                                   "ck")])
def test_every_command_imports_torch_as_a_step(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = softmax(tmp_path, fake_torch_env(tmp_path, "importerror"), *args)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: cannot import torch (ImportError: libcudnn.so.9")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_usage_errors_still_come_before_torch(tmp_path: Path) -> None:
    proc = softmax(tmp_path, fake_torch_env(tmp_path, "importerror"), "train", "--epochs", "0")
    assert proc.returncode == 2 and "--epochs" in proc.stderr, proc.stderr


def test_a_segfault_in_the_import_prints_where_it_died(tmp_path: Path) -> None:
    """A segfault cannot be caught in-process; faulthandler at least names the place (was:
    nothing at all on stderr, exit -11)."""
    proc = softmax(tmp_path, fake_torch_env(tmp_path, "segv"), *TRAIN)
    assert proc.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in proc.stderr
    assert str(Path("torch", "__init__.py")) in proc.stderr and "_import_torch" in proc.stderr


def test_ctrl_c_while_torch_imports_is_an_interrupt(tmp_path: Path) -> None:
    """A real Ctrl-C during the (slow) import is not a broken torch: exit 130 (was:
    click's "Aborted!" and exit 1)."""
    proc = subprocess.Popen([sys.executable, "-m", "softmax", *TRAIN],
                            env=fake_torch_env(tmp_path, "sleep"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == "IMPORTING"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted" and out == ""


# -- MPLBACKEND=bogus: images are written with Agg, the options are not blamed ----------------
def test_a_bogus_mplbackend_does_not_blame_the_options(tmp_path: Path) -> None:
    """Was: `--plot c.png: 'bogus' is not a valid value for backend` (exit 2), and the same
    for `predict --out p.png`. Now a warning, then the run goes on (here: to the next,
    real, problem: no data, no checkpoint)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, MPLBACKEND="bogus", SOFTMAX_OFFLINE="1", SOFTMAX_MIRROR="")
    warning = ("warning: MPLBACKEND='bogus' is not a matplotlib backend (expected e.g. agg, "
               "qtagg or module://...); images are written with agg")
    train = softmax(tmp_path, env, *TRAIN, "--plot", "c.png", "--data-root", str(empty))
    lines = train.stderr.strip().splitlines()
    assert train.returncode == 1 and len(lines) == 2, train.stderr
    assert lines[0].startswith(warning) and lines[1].startswith("Error: Fashion-MNIST not found")
    predict = softmax(tmp_path, env, "predict", "--checkpoint", "none.pt", "--out", "p.png")
    lines = predict.stderr.strip().splitlines()
    assert predict.returncode == 1 and len(lines) == 2, predict.stderr
    assert lines[0].startswith(warning) and lines[1].startswith("Error: checkpoint none.pt")
