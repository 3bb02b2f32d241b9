"""Pitfalls that exist only for the lab's tests, run through its ``module:ATTR`` seam.

The lab's children import this module by name (``lab_probes:STATE``), so the tests put
this folder on PYTHONPATH before starting a lab. Nothing here is in the registry, and the
CLI accepts registry ids only.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from devcheck.pitfalls import Fix, Pitfall, Symptom

MARKERS_ENV = "DEVCHECK_TEST_MARKERS"  # a folder where blocked processes leave their pid


def _process_state(device: str) -> str:
    """What a fresh child sees: proves runs do not leak into each other."""
    loaded_before = "torch" in sys.modules  # forked from the zygote: already there
    import torch

    shm = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None
    return json.dumps({
        "default_device": str(torch.get_default_device()),
        "cuda_initialized": torch.cuda.is_initialized(),
        "bad_fork": torch.cuda._is_in_bad_fork(),  # a poisoned zygote would break CUDA runs
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "shm_total_bytes": shm.f_blocks * shm.f_frsize if shm else None,
        "overwrite_module_params": torch.__future__.get_overwrite_module_params_on_conversion(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "torch_loaded_before_run": loaded_before,
        "main_module": getattr(sys.modules["__main__"], "__name__", None),
    })


def _mark_and_block(kind: str) -> None:
    """Leave ``<kind>-<pid>`` in the markers folder, then block until killed."""
    folder = Path(os.environ[MARKERS_ENV])
    (folder / f"{kind}-{os.getpid()}").write_text(str(os.getppid()))
    threading.Event().wait()


class _BlockingDataset:
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> Any:
        _mark_and_block("worker")


def _workers_then_block(device: str) -> None:
    """A phase that starts two DataLoader workers (fork) which never return a batch."""
    from torch.utils.data import DataLoader

    loader = DataLoader(_BlockingDataset(), batch_size=1, num_workers=2,  # type: ignore[arg-type]
                        multiprocessing_context="fork")
    it = iter(loader)
    (Path(os.environ[MARKERS_ENV]) / f"phase-{os.getpid()}").write_text(str(os.getppid()))
    next(it)


def _cuda_then_block(device: str) -> None:
    """A phase that holds a CUDA context (and 64 MiB on the GPU), then blocks."""
    import torch

    held = torch.empty(16 * 1024**2, device=device)  # noqa: F841  (kept alive)
    torch.cuda.synchronize(device)
    _mark_and_block("phase")


def _block(device: str) -> None:
    threading.Event().wait()


def _crash(device: str) -> None:
    os._exit(3)


def _raise(device: str) -> None:
    raise RuntimeError("lab probe: the expected error")


def _probe(name: str, reproduce: Any, fixed: Any = _process_state,
           needs: tuple[str, ...] = ("cpu",)) -> Pitfall:
    return Pitfall(
        id=f"lab_probes:{name}", title=f"lab test probe {name}", needs=needs,
        symptoms=(Symptom(r"lab probe: the expected error", "lab probe",
                          "RuntimeError: lab probe: the expected error"),),
        mechanism="a test double for the lab", source="tests/lab_probes.py",
        fixes=(Fix("none", "pass"),), reproduce=reproduce, fixed=fixed)


STATE = _probe("STATE", _raise)
ON_CUDA = _probe("ON_CUDA", _cuda_then_block, needs=("cuda",))
HANGS = _probe("HANGS", _block, _block)
WORKERS = _probe("WORKERS", _workers_then_block)
CRASHES = _probe("CRASHES", _crash)
NOT_A_PITFALL = "a string"
