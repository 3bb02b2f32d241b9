"""MPS backend out of memory: the MPS allocator's high-watermark limit is reached."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom
from devcheck.pitfalls.mps_float64 import _mps


def reproduce(device: str) -> None:
    import torch

    dev = torch.device(_mps(device))
    torch.mps.set_per_process_memory_fraction(0.05)  # a small limit, like a small Mac
    try:
        held = [torch.empty(1 << 28, dtype=torch.uint8, device=dev) for _ in range(4096)]
        del held
    finally:
        torch.mps.set_per_process_memory_fraction(0.0)


def fixed(device: str) -> str:
    import torch

    dev = torch.device(_mps(device))
    torch.mps.set_per_process_memory_fraction(0.05)
    try:
        for _ in range(8):  # the same work in pieces that fit; nothing kept alive
            block = torch.empty(1 << 26, dtype=torch.uint8, device=dev)
            del block
        torch.mps.empty_cache()
        return f"worked in 64 MiB pieces; {torch.mps.current_allocated_memory()} bytes held"
    finally:
        torch.mps.set_per_process_memory_fraction(0.0)


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="mps_out_of_memory",
    title="MPS backend out of memory on a Mac (unified memory, high-watermark limit)",
    needs=("mps",),
    symptoms=(
        Symptom(r"MPS backend out of memory \(MPS allocated: [\d.]+ [KMGT]i?B, other "
                r"allocations: [\d.]+ [KMGT]i?B, max allowed: [\d.]+ [KMGT]i?B\)",
                "mps backend out of memory",
                "RuntimeError: MPS backend out of memory (MPS allocated: 11.14 GB, other "
                "allocations: 6.65 GB, max allowed: 18.13 GB). Tried to allocate 375.40 MB "
                "on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper "
                "limit for memory allocations (may cause system failure).", weight=0.95),
        Symptom(r"MPS backend out of memory", "mps backend out of memory",
                "RuntimeError: MPS backend out of memory", weight=0.9, variant="cut"),
    ),
    mechanism=(
        "On Apple silicon the GPU shares the Mac's RAM. torch's MPS allocator stops at a "
        "high-watermark (by default a fraction of the recommended working set, itself less "
        "than the RAM) so the system stays usable: 'MPS allocated' is torch's live "
        "tensors, 'other allocations' is what else Metal holds for this process, and "
        "'max allowed' the limit. The same causes as CUDA OOM apply (batch too large, "
        "evaluation without torch.no_grad(), tensors kept alive), plus the other apps "
        "sharing the same memory."
    ),
    source="aten/src/ATen/mps/MPSAllocator.mm (MPSHeapAllocatorImpl::malloc: the "
    "high-watermark check)",
    fixes=(
        Fix("Lower the batch size (or image/sequence size)",
            "train_iter = DataLoader(train_ds, batch_size=32, shuffle=True)"),
        Fix("Evaluate under torch.no_grad(); accumulate loss.item(), not loss",
            "with torch.no_grad():\n    out = net(X.to('mps'))"),
        Fix("Release cached blocks between phases and close other memory-hungry apps",
            "torch.mps.empty_cache()"),
        Fix("Last resort: raise the limit (the Mac may swap or freeze)",
            "PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 python train.py"),
    ),
    warnings=(
        "PYTORCH_MPS_HIGH_WATERMARK_RATIO must be set before torch starts using MPS (in the "
        "shell, or os.environ before `import torch`), and 0.0 removes the safety limit.",
    ),
    hints=("PYTORCH_MPS_HIGH_WATERMARK_RATIO", "private pool", "batch_size"),
    cpu_note="needs Apple's MPS device (macOS on Apple silicon): cannot run here, never faked",
    related=("cuda_out_of_memory", "mps_float64"),
)
