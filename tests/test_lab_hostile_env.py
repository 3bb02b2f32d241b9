"""The lab's start with a hostile torch (issue 9, audit cases env.torch.*.pitfalls_run).

A torch whose import segfaults, calls ``os._exit(7)``, raises ``SystemExit(0)`` or sleeps
must not end in "the lab process failed to start" and nothing else: the message says how
the lab died (the signal, the exit code, the exception), in which step (importing torch),
and the fix; a hanging import is bounded by the phase's ``--timeout`` and killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from devcheck.pitfalls import get
from devcheck.pitfalls.lab import Lab, verdict
from devcheck.pitfalls.lab.results import start_failure

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the zygote lab needs fork")

TORCHES = {
    "segv": "import ctypes\nctypes.string_at(0)\n",
    "exit7": "import os, sys\nsys.stderr.write('bye\\n')\nos._exit(7)\n",
    "sysexit0": "raise SystemExit(0)\n",
    "importerror": "raise ImportError('libcudnn.so.9: cannot open shared object file')\n",
    "kbint": "raise KeyboardInterrupt\n",
    "sleep": "import time\ntime.sleep(600)\n",
    # says something on stdout, then hands over to the real torch
    "chatty": "import os, sys\nprint('not json', flush=True)\ndel sys.modules['torch']\n"
              "sys.path.remove(os.path.dirname(os.path.dirname(__file__)))\nimport torch\n",
}
PREFIX = "the lab process (python -m devcheck.pitfalls.lab --serve) failed to start: "
DOCTOR = "; `devcheck doctor` explains a broken torch"


def fake_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> Path:
    """A ``torch`` package of ``kind`` first on the lab's PYTHONPATH."""
    pkg = tmp_path / kind / "torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(TORCHES[kind], encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(pkg.parent), os.environ.get("PYTHONPATH")])))
    return pkg.parent


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE}


@pytest.mark.parametrize(("kind", "crashed"), [
    ("segv", PREFIX + "it crashed with SIGSEGV (signal 11) while importing torch" + DOCTOR),
    ("exit7", PREFIX + "it exited with code 7 while importing torch (its last words: bye)"
     + DOCTOR),
    ("sysexit0", PREFIX + "importing torch raised SystemExit: 0" + DOCTOR),
    ("importerror", PREFIX + "importing torch raised ImportError: libcudnn.so.9: cannot open "
     "shared object file" + DOCTOR),
    ("kbint", PREFIX + "importing torch raised KeyboardInterrupt: KeyboardInterrupt()"
     + DOCTOR),
])
def test_a_torch_that_kills_the_lab_on_import_is_named_with_how_and_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, crashed: str) -> None:
    fake_torch(tmp_path, monkeypatch, kind)
    before = _children()
    with Lab(mode="fork") as broken:
        r = broken.run_phase("numpy_on_requires_grad", "reproduce", "cpu")
        assert r.crashed == crashed
        again = broken.run_phase("numpy_on_requires_grad", "fixed", "cpu")
        assert again.crashed == crashed and broken.broken == crashed
    assert verdict(get("numpy_on_requires_grad"), r, None) == (
        "failed", f"reproduce crashed ({crashed})")
    assert _children() <= before


def test_a_torch_import_that_hangs_is_bounded_by_the_phase_timeout_and_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch(tmp_path, monkeypatch, "sleep")
    before = _children()
    start = time.monotonic()
    with Lab(mode="fork") as slow:
        r = slow.run_phase("numpy_on_requires_grad", "reproduce", "cpu", timeout_s=2.0)
    elapsed = time.monotonic() - start
    assert r.crashed == (PREFIX + "it timed out after 12 s while importing torch (the "
                         "--timeout limit per phase, 2 s, plus 10 s to start); a larger "
                         "--timeout gives a slow torch more time; `devcheck doctor` explains "
                         "a broken one")
    assert 12.0 <= elapsed < 12.0 + 5.0  # the limit plus the start margin, then killed
    assert _children() <= before  # the lab was killed, not left sleeping


def test_a_lab_that_never_reaches_torch_is_bounded_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an interpreter that hangs before devcheck's code runs (a sitecustomize, a wrapper)
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    before = _children()
    start = time.monotonic()
    with Lab(mode="fork", start_margin_s=1.0) as stuck:
        r = stuck.run_phase("numpy_on_requires_grad", "reproduce", "cpu", timeout_s=1.5)
    assert time.monotonic() - start < 10.0
    assert r.crashed == (PREFIX + "it timed out after 2.5 s before importing torch (the "
                         "--timeout limit per phase, 1.5 s, plus 1 s to start); "
                         "`python -m devcheck.pitfalls.lab --serve` run by hand shows what "
                         "goes wrong")
    assert _children() <= before


def test_a_torch_that_prints_on_stdout_while_importing_does_not_break_the_lab(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The protocol shares the zygote's stdout: lines that are not its JSON are skipped."""
    fake_torch(tmp_path, monkeypatch, "chatty")
    with Lab(mode="fork") as chatty:
        r = chatty.run_phase("numpy_on_requires_grad", "reproduce", "cpu")
    assert r.raised and r.exc_type == "RuntimeError", r


@pytest.mark.parametrize(("kwargs", "line"), [
    ({"stage": "torch", "returncode": -11},
     "it crashed with SIGSEGV (signal 11) while importing torch" + DOCTOR),
    ({"stage": None, "returncode": 1, "last_words": "No module named 'devcheck'"},
     "it exited with code 1 before importing torch (its last words: No module named "
     "'devcheck'); `python -m devcheck.pitfalls.lab --serve` run by hand shows what goes "
     "wrong"),
    ({"stage": "lab", "raised": "ImportError: x\x1b[2J\ny"},
     "importing devcheck's pitfall modules raised ImportError: x\\x1b[2J\\x0ay; "
     "`python -m devcheck.pitfalls.lab --serve` run by hand shows what goes wrong"),
    ({"stage": "torch", "timeout_s": 5.0, "margin_s": 10.0},
     "it timed out after 15 s while importing torch (the --timeout limit per phase, 5 s, "
     "plus 10 s to start); a larger --timeout gives a slow torch more time; `devcheck "
     "doctor` explains a broken one"),
], ids=["signal", "before-torch", "escapes", "timeout"])
def test_start_failure_is_one_printable_line(kwargs: dict[str, object], line: str) -> None:
    assert start_failure(**kwargs) == PREFIX + line  # type: ignore[arg-type]


def test_pitfalls_run_with_a_hanging_torch_obeys_timeout_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit's env.torch.sleep.pitfalls_run_timeout5, smaller: the CLI end to end."""
    fake_torch(tmp_path, monkeypatch, "sleep")
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devcheck", "pitfalls", "run", "tensor_to_not_inplace",
         "--device", "cpu", "--timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert time.monotonic() - start < 2.0 + 10.0 + 5.0  # the limit, the margin, our start
    assert "timed out after 12 s while importing torch" in out and "Traceback" not in err
    lab_of_it = [p for p in psutil.process_iter(["cmdline"])
                 if "--parent" in (p.info["cmdline"] or [])
                 and str(proc.pid) in (p.info["cmdline"] or [])]
    assert not lab_of_it, lab_of_it
