"""Asking for cuda:N when fewer GPUs are visible."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom


def reproduce(device: str) -> None:
    import torch

    n = torch.cuda.device_count()
    torch.zeros(1, device=f"cuda:{n}")  # 'cuda:1' copied from a 2-GPU machine


def fixed(device: str) -> str:
    import torch

    index = min(torch.device(device).index or 0, torch.cuda.device_count() - 1)
    return f"tensor on {torch.zeros(1, device=f'cuda:{index}').device}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="invalid_device_ordinal",
    title="cuda:N with N >= the number of visible GPUs",
    needs=("cuda",),
    symptoms=(
        Symptom(r"No CUDA GPUs are available", "no cuda gpus are available",
                "RuntimeError: No CUDA GPUs are available\n(train.py sets "
                "os.environ['CUDA_VISIBLE_DEVICES'] = '1' on a one-GPU machine)", weight=0.95,
                variant="CUDA_VISIBLE_DEVICES names a GPU that does not exist",
                requires="cuda_visible_devices"),
        Symptom(r"invalid device ordinal", "invalid device ordinal",
                "RuntimeError: CUDA error: invalid device ordinal\nCUDA kernel errors might "
                "be asynchronously reported at some other API call, so the stacktrace below "
                "might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1"),
        Symptom(r"Attempting to deserialize object on CUDA device \d+ but "
                r"torch\.cuda\.device_count\(\) is \d+", "attempting to deserialize object on "
                "cuda device", "RuntimeError: Attempting to deserialize object on CUDA device "
                "1 but torch.cuda.device_count() is 1. Please use torch.load with "
                "map_location to map your storages to an existing device.",
                variant="torch.load of a checkpoint saved on cuda:1"),
        Symptom(r"AssertionError: Invalid device id", "invalid device id",
                "AssertionError: Invalid device id", weight=0.8,
                variant="get_device_properties / get_device_name"),
        Symptom(r"(?:device|idx) >= 0 && (?:device|idx) < num_gpus",
                "< num_gpus", "RuntimeError: device >= 0 && device < num_gpus INTERNAL "
                "ASSERT FAILED at \"aten/src/ATen/cuda/CUDAContext.cpp\":51", weight=0.85),
    ),
    mechanism=(
        "CUDA numbers the visible GPUs 0..device_count()-1. Code written for a multi-GPU "
        "machine ('cuda:1', gpu_ids=0,1) or a CUDA_VISIBLE_DEVICES setting (which renumbers "
        "the visible GPUs from 0 and is read once, at CUDA initialisation) leaves an index "
        "that does not exist."
    ),
    source="c10/cuda/CUDAFunctions.cpp SetDevice (cudaErrorInvalidDevice); "
    "torch/serialization.py _validate_device for torch.load",
    fixes=(
        Fix("Use cuda:0 (or pick from device_count())",
            "device = torch.device('cuda:0')\n"
            "assert index < torch.cuda.device_count()"),
        Fix("Map checkpoint storages to an existing device",
            "state = torch.load(path, map_location='cuda:0')"),
        Fix("Set CUDA_VISIBLE_DEVICES before anything touches CUDA (before import in a "
            "notebook)", "CUDA_VISIBLE_DEVICES=1 python train.py   # then use cuda:0"),
    ),
    hints=("CUDA_VISIBLE_DEVICES", "cuda:1", "device_count"),
    related=("gpu_checkpoint_on_cpu",),
    cuda_errors=(10, 101),
)
