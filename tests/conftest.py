"""Suite-wide guards: a test must leave the process as it found it.

Leaked environment variables or a leaked default device would make later tests pass or
fail for reasons of their own (the very pitfall this project explains), so both are
checked after every test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _no_leaked_global_state() -> Iterator[None]:
    env_before = dict(os.environ)
    torch = sys.modules.get("torch")
    device_before = str(torch.get_default_device()) if torch is not None else "cpu"
    yield
    env_after = dict(os.environ)
    leaked = {
        k for k in set(env_before) | set(env_after) if env_before.get(k) != env_after.get(k)
    }
    # Set by pytest itself, and by torch the first time torch._dynamo is imported (by an
    # optimizer, torchvision or a meta-tensor error): neither is the test's doing.
    leaked -= {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR"}
    torch = sys.modules.get("torch")
    device_after = str(torch.get_default_device()) if torch is not None else "cpu"
    problems = []
    if leaked:
        problems.append(f"environment variables changed: {sorted(leaked)}")
    if device_after != device_before:
        problems.append(f"default device changed from {device_before} to {device_after}")
    if problems:
        pytest.fail("test leaked global state (use monkeypatch / restore in finally): "
                    + "; ".join(problems))


@pytest.fixture(scope="session")
def fashion_root() -> str:
    """The real Fashion-MNIST root (unpacked from the local mirror on first use), or skip.

    Offline on purpose: a test must never wait on a download, and a machine without the
    data says so in the skip reason instead of failing.
    """
    from softmax.data import DataError, locate

    root = os.environ.get("SOFTMAX_DATA_ROOT") or str(Path(__file__).parents[1] / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTMAX_OFFLINE", "1")
        try:
            return str(locate(root).resolve())
        except DataError as exc:
            pytest.skip(f"Requires: Fashion-MNIST ({str(exc)[:80]}...)")
