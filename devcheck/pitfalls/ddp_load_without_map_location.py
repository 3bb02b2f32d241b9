"""Every DDP rank loads the checkpoint onto cuda:0 (torch.load without map_location)."""

from __future__ import annotations

import os
import tempfile

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.probe import devices

MiB = 1024**2


def precondition(device: str) -> None:
    if not device.startswith("cuda"):
        raise Skip("needs 2 CUDA GPUs: on one device every rank is on cuda:0 anyway")
    count = devices.cuda_device_count()
    if count < 2:
        raise Skip(f"needs 2+ GPUs, found {count}")


def _load_on_each_rank(rank: int, world: int, path: str, use_map_location: bool) -> str:
    import torch
    import torch.distributed as dist

    own = torch.device("cuda", rank)
    torch.cuda.set_device(own)
    if rank == 0:  # saved by rank 0 from its GPU: every storage is tagged 'cuda:0'
        torch.save(torch.nn.Linear(1024, 1024).to(own).state_dict(), path)
    dist.barrier()
    if use_map_location:
        state = torch.load(path, map_location=own, weights_only=True)
    else:
        state = torch.load(path, weights_only=True)
    places = {str(t.device) for t in state.values()}
    if places != {str(own)}:
        on_gpu0 = torch.cuda.memory_allocated(0) // MiB if rank != 0 else 0
        raise RuntimeError(
            f"rank {rank} loaded the checkpoint onto {', '.join(sorted(places))}, not its own "
            f"{own}: every rank allocates on GPU 0 (rank {rank} put {on_gpu0} MiB there and "
            "a CUDA context); pass map_location=device to torch.load")
    net = torch.nn.Linear(1024, 1024).to(own)
    net.load_state_dict(state)
    return str(own)


def _run(use_map_location: bool) -> list[str]:
    from devcheck.dist.spawn import run_ranks

    with tempfile.TemporaryDirectory(prefix="devcheck-ckpt-") as tmp:
        path = os.path.join(tmp, "ckpt.pt")
        # spawn: CUDA does not survive a fork
        outcomes = run_ranks(_load_on_each_rank, 2, args=(path, use_map_location),
                             timeout_s=120, store_timeout_s=60, method="spawn")
    bad = next((o for o in outcomes if not o.ok and o.rank != 0), None) or \
        next((o for o in outcomes if not o.ok), None)
    if bad is not None:
        raise RuntimeError(bad.error_text)
    return [str(o.value) for o in outcomes]


def reproduce(device: str) -> None:
    _run(False)


def fixed(device: str) -> str:
    return "each rank loaded onto its own GPU: " + ", ".join(_run(True))


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    precondition=precondition,
    id="ddp_load_without_map_location",
    title="Every DDP rank loads the checkpoint onto cuda:0 (torch.load without map_location)",
    needs=("cuda", "multi-gpu"),
    symptoms=(
        Symptom(r"rank \d+ loaded the checkpoint onto cuda:0, not its own cuda:\d+",
                "loaded the checkpoint onto cuda:0", "RuntimeError: rank 1 loaded the "
                "checkpoint onto cuda:0, not its own cuda:1: every rank allocates on GPU 0 "
                "(rank 1 put 4 MiB there and a CUDA context); pass map_location=device to "
                "torch.load"),
    ),
    mechanism=(
        "torch.save records each storage's device ('cuda:0' when rank 0 saved); "
        "torch.load restores storages to that device unless map_location says otherwise. "
        "Under DDP every rank then allocates the checkpoint, and a CUDA context (~300-500 "
        "MiB), on GPU 0: GPU 0 runs out of memory or nvidia-smi shows N processes on it. "
        "load_state_dict copies the values to the right GPU, so nothing raises until "
        "memory does. The same happens with tensors created on 'cuda' without "
        "set_device(local_rank); NCCL then refuses outright ('Duplicate GPU detected', "
        "see nccl_error)."
    ),
    source="torch/serialization.py default_restore_location (location tag 'cuda:0'); "
    "torch/cuda/__init__.py (current device defaults to 0)",
    fixes=(
        Fix("Load onto this rank's device",
            "state = torch.load(path, map_location=device, weights_only=True)\n"
            "# device = torch.device('cuda', local_rank)"),
        Fix("Set the device first in every rank",
            "torch.cuda.set_device(local_rank)   # before any CUDA work"),
        Fix("Save device-free checkpoints (rank 0, then barrier)",
            "if rank == 0:\n    torch.save({k: v.cpu() for k, v in "
            "net.module.state_dict().items()}, path)\ndist.barrier()"),
    ),
    hints=("map_location", "torch.load", "local_rank", "DDP"),
    related=("gpu_checkpoint_on_cpu", "nccl_error"),
)
