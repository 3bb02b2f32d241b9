"""A kernel read or wrote outside the memory it owns: the CUDA context is lost."""

from __future__ import annotations

from typing import Any

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.pitfalls.cudnn_error import cuda_device


def _out_of_bounds_view(real: Any, offset_bytes: int) -> Any:
    """A float tensor whose storage pointer lies ``offset_bytes`` past ``real``'s memory:
    what a custom kernel with a wrong index, or a tensor freed under a stream, hands CUDA.
    Built from torch's own storage-from-pointer constructor (as CUDA graphs use it), since
    every public tensor API checks bounds."""
    import torch

    try:
        storage = torch._C._construct_storage_from_data_pointer(
            real.data_ptr() + offset_bytes, real.device, 64)
        meta = {"size": (16,), "stride": (1,), "dtype": torch.float32, "device": real.device,
                "storage_offset": 0}
        return torch._C._construct_CUDA_Tensor_From_Storage_And_Metadata(meta, storage)
    except (AttributeError, RuntimeError, TypeError) as exc:  # private API changed
        raise Skip(f"this torch cannot build an out-of-bounds view to show it: {exc}") from exc


def reproduce(device: str) -> None:
    import torch

    dev = torch.device(cuda_device(device))
    real = torch.zeros(16, device=dev)
    bad = _out_of_bounds_view(real, 1 << 40)  # 1 TiB past a 64-byte allocation
    (bad + 1).sum()
    torch.cuda.synchronize(dev)  # the fault surfaces here (kernels run asynchronously)


def fixed(device: str) -> str:
    import torch

    dev = torch.device(cuda_device(device))
    real = torch.zeros(16, device=dev)
    index = torch.tensor([3, 15], device=dev)
    if int(index.max()) >= real.numel():  # the check the bad kernel skipped
        raise IndexError("index out of range")
    value = (real[index] + 1).sum()
    torch.cuda.synchronize(dev)
    return f"in-bounds read on {value.device}: {float(value):.0f}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="illegal_memory_access",
    title="CUDA illegal memory access: a kernel touched memory it does not own",
    needs=("cuda",),
    symptoms=(
        Symptom(r"an illegal memory access was encountered",
                "illegal memory access was encountered",
                "RuntimeError: CUDA error: an illegal memory access was encountered\nCUDA "
                "kernel errors might be asynchronously reported at some other API call, so "
                "the stacktrace below might be incorrect.\nFor debugging consider passing "
                "CUDA_LAUNCH_BLOCKING=1", weight=0.95),
        Symptom(r"cudaErrorIllegalAddress", "cudaerrorillegaladdress",
                "CUDA error: cudaErrorIllegalAddress", weight=0.9, variant="enum name"),
        Symptom(r"CUDA_ERROR_ILLEGAL_ADDRESS", "cuda_error_illegal_address",
                "CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered",
                weight=0.9, variant="driver API (Triton, custom extensions)"),
        Symptom(r"an illegal instruction was encountered|misaligned address",
                "illegal instruction", "RuntimeError: CUDA error: an illegal instruction "
                "was encountered", weight=0.8, variant="illegal instruction"),
    ),
    mechanism=(
        "A GPU kernel read or wrote an address outside any allocation it owns. Kernels run "
        "asynchronously, so the error is reported at a later, unrelated call (often "
        ".item(), .cpu(), a synchronize, the next allocation) and the traceback points "
        "there, not at the culprit. The CUDA context is then unusable: every later CUDA "
        "call fails and the process must restart. Usual causes: custom CUDA/Triton "
        "extensions with a wrong index or size (very common with compiled third-party "
        "ops built for another torch), indices out of range in ops that skip bounds checks, "
        "a tensor freed or reused while a kernel on another stream still reads it, "
        "running out of memory inside a library kernel, or (rarely) a driver or hardware "
        "fault."
    ),
    source="reported by the CUDA runtime at the next synchronising call "
    "(c10/cuda/CUDAException.h C10_CUDA_CHECK; cudaErrorIllegalAddress = 700, 77 before "
    "CUDA 10.1)",
    fixes=(
        Fix("Make the failing kernel report itself: run synchronously",
            "CUDA_LAUNCH_BLOCKING=1 python train.py   # the traceback now points at it"),
        Fix("Find the bad access with NVIDIA's memory checker",
            "compute-sanitizer --tool memcheck python train.py"),
        Fix("Run the same step on the CPU: out-of-range indices raise a clear IndexError",
            "net_cpu, X_cpu = net.cpu(), X.cpu()\nnet_cpu(X_cpu)"),
        Fix("Rebuild third-party CUDA extensions for the installed torch/CUDA, or upgrade "
            "them; restart the process after the error",
            "pip install --force-reinstall --no-cache-dir <the-extension>"),
    ),
    warnings=(
        "After this error the process's CUDA context is gone: in a notebook, restart the "
        "kernel; retrying in the same process only repeats the error.",
    ),
    hints=("CUDA_LAUNCH_BLOCKING", "compute-sanitizer", "custom", "extension"),
    cpu_note="needs a CUDA GPU (the reproduction reads 1 TiB past a real allocation)",
    related=("device_side_assert", "cuda_unknown_error"),
    cuda_errors=(77, 700),
)
