"""A global default device leaks into fork-started DataLoader workers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devcheck.pitfalls._base import Fix, Pitfall, Symptom, accelerator

if TYPE_CHECKING:  # torch loads lazily; at run time the dataset is duck-typed
    from typing import TypeAlias

    import torch
    from torch.utils.data import Dataset

    _Base: TypeAlias = Dataset[tuple[torch.Tensor, int]]
else:
    _Base = object


class IntLabelDataset(_Base):
    """Images as tensors, labels as Python ints: default_collate calls torch.tensor on them."""

    def __init__(self) -> None:
        import torch

        self.images = torch.randn(32, 4, device="cpu")

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i % 3


def reproduce(device: str) -> None:
    import torch
    from torch.utils.data import DataLoader

    dev = accelerator(device)
    if not dev.startswith("cuda"):
        from devcheck.pitfalls._base import Skip

        raise Skip("the forked-worker CUDA re-initialisation error is CUDA-only")
    data = IntLabelDataset()
    torch.set_default_device(dev)
    try:
        loader: DataLoader[tuple[torch.Tensor, int]] = DataLoader(
            data, batch_size=8, shuffle=True, num_workers=2,
            generator=torch.Generator(device=dev), multiprocessing_context="fork")
        next(iter(loader))
    finally:
        torch.set_default_device(None)


def fixed(device: str) -> str:
    import torch
    from torch.utils.data import DataLoader

    dev = torch.device(accelerator(device))
    loader: DataLoader[tuple[torch.Tensor, int]] = DataLoader(
        IntLabelDataset(), batch_size=8, shuffle=True, num_workers=2,
        multiprocessing_context="spawn")
    for X, y in loader:
        X, y = X.to(dev), y.to(dev)
    return f"spawn workers, batches moved to {dev} in the main process"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="default_device_fork_worker",
    title="A global default device (and CUDA) inherited by fork-started DataLoader workers",
    needs=("cuda", "fork"),
    symptoms=(
        Symptom(
            r"Cannot re-initialize CUDA in forked subprocess",
            "cannot re-initialize cuda in forked subprocess",
            "RuntimeError: Caught RuntimeError in DataLoader worker process 0.\nOriginal "
            "Traceback (most recent call last):\nRuntimeError: Cannot re-initialize CUDA in "
            "forked subprocess. To use CUDA with multiprocessing, you must use the 'spawn' "
            "start method",
            weight=0.7,
        ),
    ),
    mechanism=(
        "DataLoader workers started by fork inherit the default-device mode (process state "
        "of the forking thread); spawn/forkserver workers do not, unless set_default_device "
        "runs at module top level. The parent already initialised CUDA (the DataLoader's "
        "_base_seed is drawn on the default device), so the first CUDA tensor a worker "
        "creates, e.g. default_collate's torch.tensor(labels), hits torch.cuda._lazy_init's "
        "bad-fork check, reported by the main process as 'Caught RuntimeError in DataLoader "
        "worker process N'."
    ),
    source="torch/cuda/__init__.py _lazy_init (the _is_in_bad_fork check), reached from "
    "torch/utils/data/_utils/collate.py in the worker",
    fixes=(
        Fix("Drop the global default device: move batches in the main loop",
            "for X, y in loader:\n    X, y = X.to(device), y.to(device)"),
        Fix("Start workers with spawn", "DataLoader(ds, num_workers=4, "
            "multiprocessing_context='spawn')"),
        Fix("Keep datasets on the CPU; only the training loop touches CUDA",
            "ds = TensorDataset(X_cpu, y_cpu)"),
    ),
    frames=("torch/utils/data/_utils/worker.py", "torch/utils/data/_utils/collate.py",
            "torch/utils/_device.py"),
    hints=("set_default_device", "DataLoader worker process", "_device.py", "collate"),
    cpu_note="needs CUDA: the worker must create a CUDA tensor after the parent initialised it",
    related=("cuda_init_before_fork", "default_device_sampler_generator"),
)
