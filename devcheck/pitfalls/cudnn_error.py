"""cuDNN failures: a handle cuDNN cannot create (no memory left), a kernel that fails."""

from __future__ import annotations

from typing import Any

from devcheck.pitfalls._base import Fix, Pitfall, Symptom, accelerator


def cuda_device(device: str) -> str:
    dev = accelerator(device)
    return dev if dev.startswith("cuda") else "cuda"


def hold_all_memory(dev: Any) -> list[Any]:
    """Fill the GPU through torch's caching allocator, then free a little *into torch's
    cache*: torch can still allocate outputs, but a library's own cudaMalloc (cuDNN's and
    cuBLAS's handle creation) finds the device full, as when another process holds it."""
    import torch

    held: list[Any] = []
    for block in (1 << 30, 1 << 26, 1 << 22, 1 << 20):
        while True:
            try:
                held.append(torch.empty(block, dtype=torch.uint8, device=dev))
            except torch.OutOfMemoryError:
                break
    for _ in range(min(8, len(held))):  # ~8 MiB back to torch's cache, not to the driver
        held.pop()
    big = next((i for i, t in enumerate(held) if t.numel() == 1 << 26), None)
    if big is not None:  # and one 64 MiB block: room for a library workspace taken via torch
        held.pop(big)
    return held


def reproduce(device: str) -> None:
    import torch

    dev = torch.device(cuda_device(device))
    torch.backends.cudnn.enabled = True
    x = torch.randn(1, 3, 8, 8, device=dev)
    w = torch.randn(4, 3, 3, 3, device=dev)
    held = hold_all_memory(dev)  # the first conv creates this process's cuDNN handle
    try:
        torch.nn.functional.conv2d(x, w)
        torch.cuda.synchronize(dev)
    finally:
        del held


def fixed(device: str) -> str:
    import torch

    dev = torch.device(cuda_device(device))
    x = torch.randn(1, 3, 8, 8, device=dev)
    w = torch.randn(4, 3, 3, 3, device=dev)
    out = torch.nn.functional.conv2d(x, w)  # handle created while memory is free
    held = hold_all_memory(dev)
    try:
        out = torch.nn.functional.conv2d(x, w)  # the handle exists: no new cudaMalloc
        torch.cuda.synchronize(dev)
    finally:
        del held
    return f"conv2d ran on {out.device} (cuDNN handle created before memory filled up)"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="cudnn_error",
    title="cuDNN error (CUDNN_STATUS_*): usually out of GPU memory, a mismatched install, "
    "or an input cuDNN does not support",
    needs=("cuda",),
    symptoms=(
        Symptom(r"cuDNN error: CUDNN_STATUS_(?:NOT_INITIALIZED|ALLOC_FAILED|INTERNAL_ERROR)",
                "cudnn error: cudnn_status_", "RuntimeError: cuDNN error: "
                "CUDNN_STATUS_NOT_INITIALIZED", weight=0.95,
                variant="handle creation / allocation (usually out of memory)"),
        Symptom(r"cuDNN error: ?CUDNN_STATUS_(?:EXECUTION_FAILED|MAPPING_ERROR|"
                r"ARCH_MISMATCH|RUNTIME_\w+)", "cudnn_status_",
                "RuntimeError: cuDNN error: CUDNN_STATUS_EXECUTION_FAILED", weight=0.95,
                variant="kernel failed (earlier async error, arch mismatch, bad input)"),
        Symptom(r"cuDNN error: ?CUDNN_STATUS_(?:NOT_SUPPORTED|BAD_PARAM)\w*",
                "cudnn_status_", "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. "
                "This error may appear if you passed in a non-contiguous input.",
                weight=0.95, variant="input cuDNN does not support"),
        Symptom(r"CUDNN_STATUS_[A-Z_]+", "cudnn_status_",
                "CUDNN_STATUS_EXECUTION_FAILED", weight=0.85, variant="bare status"),
        Symptom(r"cuDNN (?:Frontend )?error: ", "cudnn frontend error",
                "RuntimeError: cuDNN Frontend error: [cudnn_frontend] Error: No execution "
                "plans support the graph.", weight=0.85, variant="cuDNN frontend (torch 2.x)"),
        Symptom(r"Unable to find a valid cuDNN algorithm to run convolution",
                "unable to find a valid cudnn algorithm",
                "RuntimeError: Unable to find a valid cuDNN algorithm to run convolution",
                weight=0.9, variant="algorithm search failed (usually out of memory)"),
        Symptom(r"GET was unable to find an engine to execute this computation",
                "unable to find an engine", "RuntimeError: GET was unable to find an engine "
                "to execute this computation", weight=0.85, variant="torch 2.x, cuDNN v8 API"),
    ),
    mechanism=(
        "cuDNN reports its own status codes, and they hide the cause. NOT_INITIALIZED / "
        "ALLOC_FAILED / INTERNAL_ERROR at the first convolution almost always mean cuDNN "
        "could not allocate GPU memory for its handle or workspace: its cudaMalloc runs "
        "outside torch's caching allocator, so it fails when torch's cache or another "
        "process holds the memory, often with no 'out of memory' text at all. "
        "EXECUTION_FAILED / MAPPING_ERROR usually report an earlier asynchronous CUDA error "
        "(an illegal access, an out-of-range index) or a wheel/GPU mismatch. "
        "NOT_SUPPORTED / BAD_PARAM point at the input: huge batches, non-contiguous or "
        "odd-shaped tensors, unusual dtypes."
    ),
    source="aten/src/ATen/cudnn/Handle.cpp (cudnnCreate) and "
    "aten/src/ATen/native/cudnn/Conv_v7.cpp / Conv_v8.cpp (status checks)",
    fixes=(
        Fix("Rerun with synchronous kernels to see the real failing call",
            "CUDA_LAUNCH_BLOCKING=1 python train.py"),
        Fix("Free GPU memory first: smaller batch, end other processes on the GPU",
            "nvidia-smi   # who holds the memory\n# then lower batch_size"),
        Fix("Check that torch's bundled cuDNN is the one loaded and the GPU is supported",
            "python -c \"import torch; print(torch.backends.cudnn.version(), "
            "torch.cuda.get_arch_list(), torch.cuda.get_device_capability())\"\n"
            "devcheck doctor"),
        Fix("Make the input contiguous (and of a supported dtype)",
            "x = x.contiguous()"),
        Fix("To confirm it is cuDNN: run once without it (slower, more memory)",
            "torch.backends.cudnn.enabled = False"),
    ),
    warnings=(
        "A LD_LIBRARY_PATH pointing at a system cuDNN can shadow the one in the wheel "
        "(nvidia-cudnn-cu* packages): unset it when versions disagree.",
    ),
    hints=("conv2d", "cudnn", "CUDA_LAUNCH_BLOCKING", "benchmark"),
    cpu_note="needs a CUDA GPU (the reproduction fills its memory before the first "
    "convolution)",
    related=("cuda_out_of_memory", "cublas_error", "gpu_arch_not_in_wheel"),
)
