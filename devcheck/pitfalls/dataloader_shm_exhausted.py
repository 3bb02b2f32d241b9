"""DataLoader workers run out of /dev/shm (Docker's default is 64 MB)."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import TYPE_CHECKING

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom

if TYPE_CHECKING:  # torch loads lazily; at run time the dataset is duck-typed
    from typing import TypeAlias

    import torch
    from torch.utils.data import Dataset

    _Base: TypeAlias = Dataset[torch.Tensor]
else:
    _Base = object

_CLONE_NEWNS = 0x00020000
_MS_REC = 16384
_MS_PRIVATE = 1 << 18


class BigSampleDataset(_Base):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        import torch

        return torch.ones(512, 512)  # 1 MiB per sample, 4 MiB per batch of 4


def precondition(device: str) -> None:
    if not sys.platform.startswith("linux"):
        raise Skip("needs Linux mount namespaces to shrink /dev/shm safely")
    if os.geteuid() != 0:
        raise Skip("needs root to mount a tiny /dev/shm in a private mount namespace "
                   "(unshare -m); run as root or in a container")


def _tiny_shm() -> None:
    """Give this process (and its workers) a private 1 MiB /dev/shm; the host's is untouched."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise Skip(f"unshare(CLONE_NEWNS) failed: {os.strerror(ctypes.get_errno())}")
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise Skip(f"making mounts private failed: {os.strerror(ctypes.get_errno())}")
    if libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", 0, b"size=1m") != 0:
        raise Skip(f"mounting a 1 MiB tmpfs failed: {os.strerror(ctypes.get_errno())}")


def reproduce(device: str) -> None:
    from torch.utils.data import DataLoader

    _tiny_shm()
    loader: DataLoader[torch.Tensor] = DataLoader(
        BigSampleDataset(), batch_size=4, num_workers=1, multiprocessing_context="fork")
    next(iter(loader))


def fixed(device: str) -> str:
    from torch.utils.data import DataLoader

    _tiny_shm()
    loader: DataLoader[torch.Tensor] = DataLoader(BigSampleDataset(), batch_size=4,
                                                  num_workers=0)
    n = len(list(loader))
    return f"{n} batches with num_workers=0 (no shared memory) on a 1 MiB /dev/shm"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    precondition=precondition,
    id="dataloader_shm_exhausted",
    title="DataLoader workers out of shared memory (/dev/shm too small, e.g. Docker's 64 MB)",
    needs=("cpu", "fork", "root"),
    symptoms=(
        Symptom(r"unable to allocate shared memory\(shm\) for file", "unable to allocate "
                "shared memory", "RuntimeError: unable to allocate shared memory(shm) for "
                "file </torch_4320_1560401731_0>: No space left on device (28)"),
        Symptom(r"DataLoader worker \(pid \d+\) is killed by signal: Bus error",
                "is killed by signal: bus error", "RuntimeError: DataLoader worker (pid 1234) "
                "is killed by signal: Bus error. It is possible that dataloader's workers are "
                "out of shared memory. Please try to raise your shared memory limit.",
                variant="older torch / mmap writes"),
        Symptom(r"Unexpected bus error encountered in worker",
                "unexpected bus error encountered in worker",
                "ERROR: Unexpected bus error encountered in worker. This might be caused by "
                "insufficient shared memory (shm).", weight=0.85),
        Symptom(r"workers are out of shared memory", "out of shared memory",
                "It is possible that dataloader's workers are out of shared memory.",
                weight=0.8),
    ),
    mechanism=(
        "Worker processes hand batches to the main process through shared memory files in "
        "/dev/shm; default_collate allocates each batch there directly. Docker gives "
        "containers a 64 MB /dev/shm, so a few large batches x num_workers x prefetch "
        "exhaust it."
    ),
    source="torch/utils/data/_utils/collate.py (UntypedStorage._new_shared in a worker) -> "
    "aten/src/ATen/MapAllocator.cpp (posix_fallocate)",
    fixes=(
        Fix("Give the container more shared memory",
            "docker run --shm-size=2g ...   # or --ipc=host"),
        Fix("Use fewer workers / smaller batches, or none",
            "DataLoader(ds, batch_size=256, num_workers=0)"),
    ),
    frames=("torch/utils/data/_utils/collate.py",),
    hints=("/dev/shm", "docker", "shm-size"),
    cpu_note="reproduced with a 1 MiB tmpfs on /dev/shm in a private mount namespace",
)
