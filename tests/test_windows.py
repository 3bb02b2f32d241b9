# ruff: noqa: E501 - the pasted tracebacks keep their real (long) lines
"""Issue 15 item 4, simulated on Linux: the learner's platform is Windows, in a notebook.

- ``devcheck explain`` reads Windows tracebacks (``G:\\...`` and ``C:\\Users\\...`` frames,
  ``Lib\\site-packages``) as well as POSIX ones;
- the spawn start method (Windows' only one) is forced on Linux for a Dataset defined the
  way a notebook defines it (in ``__main__``, with no file), and the failure it really causes
  is explained as ``spawn_needs_importable_main``; the same code under fork works, so the
  pitfall is the start method's;
- on a machine without fork, the fork-only pitfalls are not offered as reproducible, and the
  ones that still apply are.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from devcheck.pitfalls import all_pitfalls
from devcheck.pitfalls.explain import explain_text
from devcheck.probe.devices import MachineFacts
from devcheck.rules.pitfalls import reproducible_here

WINDOWS_TRACEBACKS = {
    "default_device_sampler_generator": r"""
RuntimeError                              Traceback (most recent call last)
Cell In[29], line 17, in train_epoch_ch3(net, train_iter, loss, updater)
---> 17 for X, y in train_iter:
File G:\dl\deeplearning\.venv\Lib\site-packages\torch\utils\data\sampler.py:189, in RandomSampler.__iter__(self)
--> 189         yield from torch.randperm(n, generator=generator).tolist()
File G:\dl\deeplearning\.venv\Lib\site-packages\torch\utils\_device.py:104, in DeviceContext.__torch_function__(self, func, types, args, kwargs)
RuntimeError: Expected a 'cuda' device type for generator but found 'cpu'
""",
    "cpu_only_wheel": r"""
Traceback (most recent call last):
  File "C:\Users\Learner\Documents\d2l\train.py", line 12, in <module>
    X = X.to("cuda")
  File "C:\Users\Learner\AppData\Local\Programs\Python\Python312\Lib\site-packages\torch\cuda\__init__.py", line 310, in _lazy_init
    raise AssertionError("Torch not compiled with CUDA enabled")
AssertionError: Torch not compiled with CUDA enabled
""",
    "spawn_needs_importable_main": r"""
Traceback (most recent call last):
  File "<string>", line 1, in <module>
  File "C:\Users\Learner\AppData\Local\Programs\Python\Python312\Lib\multiprocessing\spawn.py", line 122, in spawn_main
    exitcode = _main(fd, parent_sentinel)
  File "C:\Users\Learner\AppData\Local\Programs\Python\Python312\Lib\multiprocessing\spawn.py", line 132, in _main
    self = reduction.pickle.load(from_parent)
AttributeError: Can't get attribute 'FashionDataset' on <module '__main__' (built-in)>
""",
}


@pytest.mark.parametrize("expected", sorted(WINDOWS_TRACEBACKS))
def test_explain_reads_windows_tracebacks(expected: str) -> None:
    matches = explain_text(WINDOWS_TRACEBACKS[expected])
    assert matches and matches[0].id == expected


def test_explain_cli_on_the_learners_g_drive_traceback() -> None:
    """The whole command, as a learner runs it: the G:\\ frames are shown as evidence."""
    proc = subprocess.run([sys.executable, "-m", "devcheck", "explain", "--json", "-"],
                          input=WINDOWS_TRACEBACKS["default_device_sampler_generator"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)["matches"][0]
    assert top["id"] == "default_device_sampler_generator"
    evidence = json.dumps(top["evidence"])
    assert "sampler.py" in evidence and "G:" in evidence


# A notebook cell: the Dataset class lives in __main__, which has no file a child could import.
NOTEBOOK_CELL = textwrap.dedent("""
    import torch
    from torch.utils import data

    class FashionDataset(data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.zeros(784), i % 10

    loader = data.DataLoader(FashionDataset(), batch_size=4, num_workers=1,
                             multiprocessing_context={method!r})
    print(sum(len(y) for _, y in loader))
""")


def run_cell(method: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", NOTEBOOK_CELL.format(method=method)],
                          capture_output=True, text=True, timeout=300)


def test_spawn_with_a_notebook_defined_dataset_fails_and_is_explained() -> None:
    """Windows' start method, forced on Linux: the real failure, then devcheck's reading."""
    proc = run_cell("spawn")
    assert proc.returncode != 0
    assert "Can't get attribute 'FashionDataset' on <module '__main__'" in proc.stderr
    matches = explain_text(proc.stderr)
    assert matches and matches[0].id == "spawn_needs_importable_main"


@pytest.mark.skipif(sys.platform == "win32", reason="fork does not exist on Windows")
def test_the_same_cell_works_under_fork() -> None:
    """Only the start method differs: the pitfall is spawn's, not the Dataset's."""
    proc = run_cell("fork")
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.strip() == "8"


def test_without_fork_the_fork_only_pitfalls_are_not_offered() -> None:
    windows = MachineFacts(torch_installed=True, fork=False, linux=False)
    linux = MachineFacts(torch_installed=True, fork=True, linux=True)
    fork_only = [p for p in all_pitfalls() if "fork" in p.needs]
    assert fork_only, "the catalogue has pitfalls that need fork"
    for pitfall in fork_only:
        ok, why = reproducible_here(pitfall, windows)
        assert not ok and why in ("needs fork", "needs cuda", "needs cuda or mps"), (
            pitfall.id, why)
    spawn = next(p for p in all_pitfalls() if p.id == "spawn_needs_importable_main")
    assert reproducible_here(spawn, windows)[0] and reproducible_here(spawn, linux)[0]
    shm = next(p for p in all_pitfalls() if p.id == "dataloader_shm_exhausted")
    assert not reproducible_here(shm, windows)[0]
