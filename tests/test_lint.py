"""The style rules are part of the build: ruff everywhere, mypy on the devcheck package.

Both run as subprocesses of the venv's own tools, so a clean clone's CI checks exactly
what a developer's `ruff check .` / `mypy` would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"Requires: {name} (pip install -e '.[test]')")
    return found


def test_ruff_is_clean() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "."], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean_on_devcheck() -> None:
    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
