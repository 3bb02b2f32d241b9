"""CUDA out of memory: the batch (or what is kept alive) does not fit the GPU's memory."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom, accelerator


def _device(device: str) -> str:
    dev = accelerator(device)
    return dev if dev.startswith("cuda") else "cuda"


def reproduce(device: str) -> None:
    import torch

    dev = torch.device(_device(device))
    _free, total = torch.cuda.mem_get_info(dev)
    net = torch.nn.Linear(784, 10).to(dev)
    rows = 2 * total // (784 * 4)  # a "batch" twice the size of the whole GPU
    X = torch.randn(rows, 784, device=dev)  # raises torch.OutOfMemoryError
    net(X)


def fixed(device: str) -> str:
    import torch

    dev = torch.device(_device(device))
    _free, total = torch.cuda.mem_get_info(dev)
    net = torch.nn.Linear(784, 10).to(dev)
    rows = 2 * total // (784 * 4)
    chunk = 65_536  # the same rows, one batch at a time, without autograd history
    torch.cuda.reset_peak_memory_stats(dev)
    correct = torch.zeros((), device=dev)
    with torch.no_grad():
        for _ in range(0, min(rows, 64 * chunk), chunk):
            X = torch.randn(chunk, 784, device=dev)
            correct += (net(X).argmax(1) == 0).sum()
    peak = torch.cuda.max_memory_allocated(dev) / 2**20
    return (f"batches of {chunk} rows under torch.no_grad(): peak {peak:.0f} MiB of "
            f"{total / 2**30:.0f} GiB")


_OOM_TEXT = (
    "The CUDA caching allocator could not find a free block of the requested size, even "
    "after releasing its cache: the live tensors (parameters, optimizer state, the batch, "
    "and every activation autograd keeps for backward) plus the request exceed the GPU's "
    "memory. The message counts it out: 'allocated by PyTorch' is live tensors; 'reserved "
    "by PyTorch but unallocated' is cached blocks of the wrong sizes (fragmentation); "
    "'Process N has X memory in use' / 'non-PyTorch memory' is memory other processes or "
    "the CUDA context hold. torch.cuda.empty_cache() does not help: torch already empties "
    "its cache and retries before raising, and the cache only ever held memory torch can "
    "reuse. Usual causes: a batch too large for the card; evaluation without "
    "torch.no_grad() (activations kept for a backward that never comes); summing losses "
    "as tensors (total += loss keeps every step's graph alive: use loss.item() or "
    "loss.detach()); another process (a second run, a notebook kernel) holding the GPU."
)

PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="cuda_out_of_memory",
    title="CUDA out of memory: the batch, the model or kept tensors do not fit the GPU",
    needs=("cuda",),
    symptoms=(
        Symptom(
            r"CUDA out of memory\. Tried to allocate [\d.]+ [KMGT]i?B\. GPU \d+ has a total "
            r"capac\w* of",
            "cuda out of memory",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 22.78 GiB. GPU 0 "
            "has a total capacity of 31.47 GiB of which 12.73 GiB is free. Including "
            "non-PyTorch memory, this process has 18.73 GiB memory in use. Of the allocated "
            "memory 9.08 GiB is allocated by PyTorch, and 9.35 GiB is reserved by PyTorch "
            "but unallocated. If reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.",
            weight=0.95,
            variant="torch >= 2.1 (per-process accounting)",
        ),
        Symptom(
            r"CUDA out of memory\. Tried to allocate [\d.]+ [KMGT]i?B \(GPU \d+; [\d.]+ "
            r"[KMGT]i?B total capacity",
            "cuda out of memory",
            "RuntimeError: CUDA out of memory. Tried to allocate 2.26 GiB (GPU 0; 6.00 GiB "
            "total capacity; 781.59 MiB already allocated; 3.03 GiB free; 1.24 GiB reserved "
            "in total by PyTorch)",
            weight=0.95,
            variant="torch 1.x - 2.0",
        ),
        Symptom(r"CUDA out of memory", "cuda out of memory",
                "torch.cuda.OutOfMemoryError: CUDA out of memory.", weight=0.9,
                variant="cut"),
        Symptom(r"CUDA error: out of memory", "cuda error: out of memory",
                "RuntimeError: CUDA error: out of memory\nCUDA kernel errors might be "
                "asynchronously reported at some other API call", weight=0.9,
                variant="outside the caching allocator (CUDA context, a library's own "
                "cudaMalloc)"),
        Symptom(r"\bOutOfMemoryError\b", "outofmemoryerror",
                "torch.OutOfMemoryError: CUDA out of memory.", weight=0.8,
                variant="exception name"),
        Symptom(r"cuda runtime error \(2\) : out of memory", "out of memory",
                "RuntimeError: cuda runtime error (2) : out of memory at "
                "/pytorch/aten/src/THC/generic/THCStorage.cu:58", weight=0.9,
                variant="torch <= 1.0 (cudaErrorMemoryAllocation = 2)"),
    ),
    mechanism=_OOM_TEXT,
    source="c10/cuda/CUDACachingAllocator.cpp (DeviceCachingAllocator::malloc: frees cached "
    "blocks, retries, then raises OutOfMemoryError with the accounting)",
    fixes=(
        Fix("Lower the batch size (or image size / sequence length) until it fits; keep "
            "the effective batch with gradient accumulation",
            "train_iter = DataLoader(train_ds, batch_size=64, shuffle=True)  # was 256\n"
            "# same effective batch: step the optimizer every 4 batches\n"
            "loss = loss / 4\nloss.backward()\nif (i + 1) % 4 == 0:\n"
            "    updater.step(); updater.zero_grad()"),
        Fix("Evaluate and predict under torch.no_grad() (no activations kept)",
            "with torch.no_grad():\n    for X, y in test_iter:\n"
            "        acc += (net(X.to(device)).argmax(1) == y.to(device)).sum()"),
        Fix("Accumulate numbers, not tensors with history",
            "total_loss += loss.item()   # not: total_loss += loss"),
        Fix("Large 'reserved but unallocated' (fragmentation): let segments grow",
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python train.py"),
        Fix("Free the GPU from other processes (a previous run, another notebook kernel)",
            "nvidia-smi   # PID and memory per process; end the stale one\n"
            "devcheck gpus  # the same, with process names"),
        Fix("Use less memory per value: mixed precision",
            "with torch.autocast('cuda', dtype=torch.bfloat16):\n    loss = loss_fn(net(X), y)"),
    ),
    warnings=(
        "torch.cuda.empty_cache() is not a fix: torch has already emptied its cache and "
        "retried before raising, and calling it every step only makes allocation slower.",
        "A notebook keeps the failed step's tensors alive through the traceback (and "
        "variables like `out`, `loss`): restart the kernel after an OOM before retrying.",
    ),
    hints=("PYTORCH_CUDA_ALLOC_CONF", "batch_size", "max_split_size_mb",
           "expandable_segments"),
    cpu_note="needs a CUDA GPU (the reproduction asks for twice the GPU's memory)",
    related=("mps_out_of_memory", "cudnn_error", "cublas_error"),
    cuda_errors=(2,),
)
