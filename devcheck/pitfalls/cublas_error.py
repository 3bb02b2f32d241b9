"""cuBLAS failures: CUBLAS_STATUS_* when creating a handle or running a matmul."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom
from devcheck.pitfalls.cudnn_error import cuda_device, hold_all_memory


def reproduce(device: str) -> None:
    import torch

    dev = torch.device(cuda_device(device))
    a = torch.randn(64, 64, device=dev)
    held = hold_all_memory(dev)  # the first matmul creates this process's cuBLAS handle
    try:
        (a @ a).sum()
        torch.cuda.synchronize(dev)
    finally:
        del held


def fixed(device: str) -> str:
    import torch

    dev = torch.device(cuda_device(device))
    a = torch.randn(64, 64, device=dev)
    out = a @ a  # handle and workspace created while memory is free
    held = hold_all_memory(dev)
    try:
        out = a @ a
        torch.cuda.synchronize(dev)
    finally:
        del held
    return f"matmul ran on {out.device} (cuBLAS handle created before memory filled up)"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="cublas_error",
    title="cuBLAS error (CUBLAS_STATUS_*): usually out of GPU memory at handle creation, "
    "a wheel/GPU mismatch, or bad shapes",
    needs=("cuda",),
    symptoms=(
        Symptom(r"CUBLAS_STATUS_(?:NOT_INITIALIZED|ALLOC_FAILED) when calling `?"
                r"cublas(?:Create|LtCreate)", "cublas_status_",
                "RuntimeError: CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling "
                "`cublasCreate(handle)`", weight=0.95,
                variant="handle creation (usually out of memory)"),
        Symptom(r"CUBLAS_STATUS_(?:EXECUTION_FAILED|INTERNAL_ERROR|ARCH_MISMATCH|"
                r"NOT_SUPPORTED|INVALID_VALUE|MAPPING_ERROR) when calling `?cublas\w+",
                "cublas_status_",
                "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling "
                "`cublasSgemm( handle, opa, opb, m, n, k, &alpha, a, lda, b, ldb, &beta, "
                "c, ldc)`", weight=0.95,
                variant="a matmul failed (earlier async error, wheel/GPU mismatch, shapes)"),
        Symptom(r"CUBLAS_STATUS_[A-Z_]+", "cublas_status_",
                "CUBLAS_STATUS_EXECUTION_FAILED", weight=0.9, variant="bare status"),
        Symptom(r"cuBLAS (?:error|API failed)", "cublas", "RuntimeError: cuBLAS error: "
                "the library was not initialized", weight=0.7, variant="other wordings"),
    ),
    mechanism=(
        "cuBLAS returns status codes that hide the cause. NOT_INITIALIZED / ALLOC_FAILED "
        "when calling cublasCreate(handle) means cuBLAS could not allocate GPU memory for "
        "its handle: its cudaMalloc runs outside torch's caching allocator, so it fails when "
        "the GPU is full (a large model, torch's cache, another process), usually at the "
        "first matmul of a process or thread. EXECUTION_FAILED / INTERNAL_ERROR usually "
        "report an earlier asynchronous error (an out-of-range index in an embedding, an "
        "illegal access), a wheel built for another GPU architecture or CUDA, or a matmul "
        "whose shapes or dtypes the library rejects."
    ),
    source="aten/src/ATen/cuda/CublasHandlePool.cpp (cublasCreate) and "
    "aten/src/ATen/cuda/CUDABlas.cpp (TORCH_CUDABLAS_CHECK)",
    fixes=(
        Fix("Rerun with synchronous kernels to find the call that really failed",
            "CUDA_LAUNCH_BLOCKING=1 python train.py"),
        Fix("Free GPU memory: smaller batch or model, end other processes on the GPU",
            "nvidia-smi   # who holds the memory"),
        Fix("Check indices and labels on the CPU (an embedding index >= num_embeddings "
            "shows up as a cuBLAS failure on CUDA)",
            "assert int(tokens.max()) < emb.num_embeddings and int(tokens.min()) >= 0"),
        Fix("Check that the wheel supports this GPU and driver", "devcheck doctor"),
    ),
    hints=("cublasCreate", "matmul", "linear", "CUDA_LAUNCH_BLOCKING", "embedding"),
    cpu_note="needs a CUDA GPU (the reproduction fills its memory before the first matmul)",
    related=("cuda_out_of_memory", "cudnn_error", "device_side_assert"),
)
