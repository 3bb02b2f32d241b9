"""Spawn-started workers (Windows, macOS, notebooks) must import what they unpickle."""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import types
from collections.abc import Sized

from devcheck.pitfalls._base import Fix, Pitfall, Symptom


class SquaresDataset:
    """Defined in an importable module: a spawned worker can unpickle it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        return i * i


def _receive(dataset: Sized) -> None:
    """The worker's job here: it only has to receive (unpickle) the dataset."""
    len(dataset)


def _spawn_with(obj: Sized) -> tuple[int | None, str]:
    """Start a spawn-context process that receives ``obj``, as a DataLoader worker does.

    Returns its exit code and what it wrote to stderr (a spawned child reports its
    bootstrap errors there, not to the parent).
    """
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            proc = ctx.Process(target=_receive, args=(obj,))
            proc.start()
            proc.join(60)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        return proc.exitcode, err.read().decode("utf-8", "replace")


def reproduce(device: str) -> None:
    # A notebook's __main__ has no file: a class defined in a cell cannot be found again
    # by a freshly spawned interpreter.
    real_main = sys.modules["__main__"]
    notebook_main = types.ModuleType("__main__")
    MyDS = type("MyDS", (SquaresDataset,), {"__module__": "__main__"})
    vars(notebook_main)["MyDS"] = MyDS  # a class defined in a notebook cell
    sys.modules["__main__"] = notebook_main
    try:
        code, err = _spawn_with(MyDS())
    finally:
        sys.modules["__main__"] = real_main
    if code != 0:
        last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        # relay the worker's own error: the parent only sees the process die
        raise RuntimeError(f"spawned worker exited with code {code}: {last[0]}")


def fixed(device: str) -> str:
    real_main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        code, err = _spawn_with(SquaresDataset())
    finally:
        sys.modules["__main__"] = real_main
    if code != 0:
        raise RuntimeError(f"worker failed with the Dataset in a module: {err[-300:]}")
    return "Dataset defined in an importable module: the spawned worker unpickled it"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="spawn_needs_importable_main",
    title="Spawned DataLoader workers re-import __main__ (Windows, macOS, notebooks)",
    needs=("cpu", "cuda", "mps"),
    symptoms=(
        Symptom(r"An attempt has been made to start a new process before the\s+current "
                r"process has finished its bootstrapping phase", "attempt has been made to "
                "start a new process", "RuntimeError:\n        An attempt has been made to "
                "start a new process before the\n        current process has finished its "
                "bootstrapping phase."),
        Symptom(r"Can't get attribute '\w+' on <module '__main__'", "can't get attribute",
                "AttributeError: Can't get attribute 'MyDS' on <module '__main__' "
                "(built-in)>", variant="notebook / interactive"),
        Symptom(r"Can't pickle <(?:function|class) [^\n]{0,80}?>: (?:attribute lookup|it's "
                r"not found)", "can't pickle", "_pickle.PicklingError: Can't pickle <function "
                "<lambda> at 0x7f>: attribute lookup <lambda> on __main__ failed", weight=0.7),
        Symptom(r"Can't (?:pickle|get) local object", "local object",
                "AttributeError: Can't pickle local object 'main.<locals>.MyDS'", weight=0.7),
    ),
    mechanism=(
        "With the spawn start method (the default on Windows and macOS), each DataLoader "
        "worker is a fresh interpreter: it re-imports the main script (running its "
        "top-level code again, which starts workers during bootstrap) and unpickles the "
        "Dataset, which needs its class importable by name. A notebook's __main__ has no "
        "file, so classes defined in cells cannot be found."
    ),
    source="multiprocessing/spawn.py _check_not_importing_main / _main "
    "(reduction.pickle.load), reached from torch/utils/data/dataloader.py worker start",
    fixes=(
        Fix("Guard the script's entry point",
            "if __name__ == '__main__':\n    main()"),
        Fix("Define the Dataset in a .py module and import it (notebooks)",
            "from mydata import MyDS"),
        Fix("Or use no workers", "DataLoader(ds, batch_size=256, num_workers=0)"),
    ),
    frames=("multiprocessing/spawn.py",),
    hints=("spawn", "num_workers", "freeze_support"),
)
