"""One entry point for a fresh clone, the same in bash, zsh and PowerShell (Linux, macOS, Windows).

    python3 scripts/dev.py doctor [ARGS...]      # set up, then: devcheck doctor ARGS
    python3 scripts/dev.py test [PYTEST ARGS...] # set up, then: python -m pytest ARGS
    python3 scripts/dev.py setup                 # only the set-up

(On Windows: ``python scripts/dev.py doctor``; ``py scripts/dev.py doctor`` works too.)

The set-up, each step skipped when already done:
1. ``.venv/`` created with the Python running this script (3.10 or newer);
2. devcheck installed into it with its test extra (``pip install -e ".[test]"``: torch among
   them, a large download once), again whenever pyproject.toml is newer than the last install;
3. the Fashion-MNIST mirror: Debian's ``dataset-fashion-mnist`` installed with apt-get when
   this runs as root on a system that has apt-get; elsewhere a note says how the trainer will
   find the data (``--data-root``, or torchvision's download on first use) and the real-data
   tests skip with that reason.
Why Python and not a shell script: PowerShell cannot run ``bash scripts/dev.sh``, and list
arguments need no quoting (``.[test]`` is a glob pattern in zsh and must be quoted there).
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
STAMP = VENV / ".devcheck-install-stamp"
MIRROR = Path("/usr/share/datasets/fashion-mnist")
TASKS = ("doctor", "test", "setup")
MIN_PYTHON = (3, 10)


def say(message: str) -> None:
    print(f"[dev.py] {message}", file=sys.stderr, flush=True)


def venv_python(venv: Path | None = None) -> Path:
    """The venv's interpreter: ``Scripts\\python.exe`` on Windows, ``bin/python`` elsewhere."""
    venv = VENV if venv is None else venv
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def run(cmd: Sequence[str | Path], **kwargs: Any) -> int:
    """Run a command in the repository, echoing it; its exit status is returned, not raised."""
    say("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, check=False, **kwargs).returncode


def needs_install(stamp: Path | None = None, pyproject: Path | None = None) -> bool:
    """True when .venv has never been installed into, or pyproject.toml changed since."""
    stamp = STAMP if stamp is None else stamp
    pyproject = ROOT / "pyproject.toml" if pyproject is None else pyproject
    return not stamp.is_file() or pyproject.stat().st_mtime > stamp.stat().st_mtime


def setup_venv() -> Path:
    """Create .venv and install devcheck into it; return the venv's interpreter."""
    python = venv_python()
    if not python.is_file():
        say(f"creating .venv with Python {sys.version.split()[0]} ({sys.executable})")
        if run([sys.executable, "-m", "venv", VENV]) != 0:
            raise SystemExit(f"[dev.py] could not create {VENV}; expected `{sys.executable} "
                             f"-m venv` to work. Fix: install the venv module (Debian: apt "
                             f"install python3-venv) and rerun")
    if needs_install():
        say("installing devcheck and its dependencies into .venv (torch is large: this takes "
            "a while, once)")
        code = run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-e", ".[test]"])
        if code != 0:
            raise SystemExit(f"[dev.py] pip install -e .[test] failed (exit {code}); the lines "
                             f"above say why. Fix: check the network or proxy to PyPI, then rerun")
        STAMP.touch()
    return python


def is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def setup_data() -> None:
    """Debian's Fashion-MNIST mirror where the system allows; never a download here."""
    if (MIRROR / "train-images-idx3-ubyte.gz").is_file():
        return
    apt = shutil.which("apt-get")
    if is_root() and apt:
        say("installing Debian's dataset-fashion-mnist (the Fashion-MNIST mirror)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        install = [apt, "install", "-y", "-q", "dataset-fashion-mnist"]
        if run(install, **quiet) == 0:
            return
        if run([apt, "update", "-q"], **quiet) == 0 and run(install, **quiet) == 0:
            return
        say("could not install dataset-fashion-mnist; the real-data tests will skip "
            "(README: Data)")
        return
    say(f"no Fashion-MNIST mirror at {MIRROR} (Debian: apt install dataset-fashion-mnist, as "
        f"root): `softmax train` downloads it on first use, or pass --data-root DIR; the "
        f"real-data tests skip until then (README: Data)")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    task = args.pop(0) if args else "doctor"
    if task not in TASKS:
        say(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}. Example: python3 "
            f"scripts/dev.py test")
        return 2
    if sys.version_info < MIN_PYTHON:
        say(f"Python {sys.version.split()[0]} runs this script; expected "
            f"{'.'.join(map(str, MIN_PYTHON))} or newer. Fix: run it with a newer python")
        return 2
    python = setup_venv()
    setup_data()
    if task == "setup":
        say("set-up done")
        return 0
    try:
        if task == "doctor":
            return run([python, "-m", "devcheck", "doctor", *args])
        return run([python, "-m", "pytest", *args])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
