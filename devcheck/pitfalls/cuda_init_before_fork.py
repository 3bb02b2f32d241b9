"""CUDA touched in the parent, then used in a forked child (DataLoader worker, Pool)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.probe import devices

if TYPE_CHECKING:  # torch loads lazily; at run time the dataset is duck-typed
    from typing import TypeAlias

    import torch
    from torch.utils.data import Dataset

    _Base: TypeAlias = Dataset[torch.Tensor]
else:
    _Base = object


class CudaItemDataset(_Base):
    """A dataset that builds its samples on the GPU: the worker must initialise CUDA."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        import torch

        return torch.full((2,), float(i), device=self.device)


class CpuItemDataset(CudaItemDataset):
    def __init__(self) -> None:
        super().__init__("cpu")


def precondition(device: str) -> None:
    """The CPU stand-in needs a CUDA-enabled build (e.g. no driver, or no GPU).

    A CPU-only wheel (the cpu index CI runners use) has no CUDA state to poison: torch's
    bad-fork flag does not exist there, so the worker fails with 'Torch not compiled with
    CUDA enabled' instead, a different error with a different cause.
    """
    import torch

    if not device.startswith("cuda") and not devices.cuda_built():
        raise Skip(f"this torch build is CPU-only ({torch.__version__}): without CUDA support "
                   "a fork cannot inherit CUDA state; needs a CUDA build (no GPU required)")


def reproduce(device: str) -> None:
    import torch
    from torch.utils.data import DataLoader

    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # the parent initialises CUDA
        target = device
    else:
        # Without a GPU, even a failed initialisation marks forked children as "bad
        # fork": the same check fires in the worker.
        try:
            torch.cuda.init()
        except Exception:
            pass
        target = "cuda"
    loader: DataLoader[torch.Tensor] = DataLoader(
        CudaItemDataset(target), batch_size=4, num_workers=1, multiprocessing_context="fork")
    next(iter(loader))


def fixed(device: str) -> str:
    import torch
    from torch.utils.data import DataLoader

    loader: DataLoader[torch.Tensor] = DataLoader(
        CpuItemDataset(), batch_size=4, num_workers=1, multiprocessing_context="fork")
    for batch in loader:
        batch = batch.to(device)
    torch.zeros(1, device=device)
    return f"workers made CPU tensors; batches moved to {device} in the main process"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    precondition=precondition,
    id="cuda_init_before_fork",
    title="CUDA initialised before fork: forked workers cannot use CUDA",
    needs=("cpu", "cuda", "fork"),
    symptoms=(
        Symptom(r"Cannot re-initialize CUDA in forked subprocess",
                "cannot re-initialize cuda in forked subprocess",
                "RuntimeError: Cannot re-initialize CUDA in forked subprocess. To use CUDA "
                "with multiprocessing, you must use the 'spawn' start method"),
    ),
    mechanism=(
        "CUDA state cannot survive fork(). Once the parent has initialised CUDA (or even "
        "tried to), torch marks forked children 'bad fork', and their first CUDA call "
        "raises. DataLoader workers and multiprocessing.Pool use fork by default on Linux."
    ),
    source="torch/cuda/__init__.py _lazy_init (_is_in_bad_fork), flag set by the "
    "pthread_atfork handler registered in torch/csrc/cuda/Module.cpp",
    fixes=(
        Fix("Keep datasets and workers on the CPU; move batches in the main process",
            "for X, y in loader:\n    X, y = X.to(device), y.to(device)"),
        Fix("Or start workers with spawn",
            "DataLoader(ds, num_workers=4, multiprocessing_context='spawn')\n"
            "# multiprocessing: mp.get_context('spawn').Pool(...)"),
    ),
    frames=("torch/utils/data/_utils/worker.py",),
    hints=("DataLoader worker process", "multiprocessing", "Pool"),
    cpu_note="on a machine without a GPU a failed CUDA initialisation in the parent sets "
    "the same bad-fork flag, so the real message appears (needs a CUDA build of torch; a "
    "CPU-only wheel has no such flag and is skipped)",
    related=("default_device_fork_worker",),
    cuda_errors=(3,),
)
