"""Per-batch .item()/float() waits for the GPU: training runs at the speed of syncs."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom

if TYPE_CHECKING:
    import torch


def _batches(dev: torch.device, n: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    return [(torch.randn(32, 8, generator=g).to(dev), torch.randint(0, 3, (32,),
             generator=g).to(dev)) for _ in range(n)]


def _setup(device: str) -> tuple[torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Model and batches on the GPU, plus one warm-up step outside the debug mode.

    The warm-up keeps one-time work (CUDA context, cuBLAS handles, allocator growth) out
    of the measured loop, so only the loop's own syncs count.
    """
    import torch

    if not device.startswith("cuda"):
        raise Skip("sync debug mode exists for CUDA only")
    dev = torch.device(device)
    net = torch.nn.Linear(8, 3).to(dev)
    batches = _batches(dev)
    X, y = batches[0]
    torch.nn.functional.cross_entropy(net(X), y).detach()
    torch.cuda.synchronize(dev)
    return net, batches


def _count_syncs(step: Callable[[], object]) -> int:
    """How many synchronizing operations torch reports while ``step`` runs ('warn' mode)."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("called a synchronizing" in str(w.message) for w in caught)


def reproduce(device: str) -> None:
    import torch

    net, batches = _setup(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        total = 0.0
        for X, y in batches:
            loss = torch.nn.functional.cross_entropy(net(X), y)
            total += float(loss)  # d2l's Accumulator.add(float(l.sum()), ...): a sync
    finally:
        torch.cuda.set_sync_debug_mode(0)


def fixed(device: str) -> str:
    import torch

    net, batches = _setup(device)
    dev = batches[0][0].device

    def bare_steps() -> None:  # the training step alone, no metric read
        for X, y in batches:
            torch.nn.functional.cross_entropy(net(X), y).detach()

    total = torch.zeros((), device=dev)

    def on_device() -> None:  # the fix: accumulate on the GPU
        nonlocal total
        for X, y in batches:
            total += torch.nn.functional.cross_entropy(net(X), y).detach()

    # Compare against the bare step rather than demand zero: should some torch version's
    # loss kernels ever sync on their own, the fix still adds none of its own.
    bare, fixed_syncs = _count_syncs(bare_steps), _count_syncs(on_device)
    if fixed_syncs > bare:
        raise RuntimeError(f"accumulating on the device still added {fixed_syncs - bare} "
                           f"synchronizing operation(s) over {len(batches)} batches")
    return (f"mean loss {total.item() / len(batches):.3f}: {fixed_syncs} sync(s) in "
            f"{len(batches)} batches (the bare step: {bare}), one .item() per epoch")


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="hidden_host_sync",
    title="Hidden host syncs (.item(), float(), print, boolean masks) every batch",
    needs=("cuda",),
    symptoms=(
        Symptom(r"called a synchronizing CUDA operation", "called a synchronizing cuda "
                "operation", "RuntimeError: called a synchronizing CUDA operation"),
        Symptom(r"called a synchronizing operation", "called a synchronizing operation",
                "RuntimeError: called a synchronizing operation", weight=0.85,
                variant="older wording"),
    ),
    mechanism=(
        "CUDA kernels run asynchronously; reading a value on the host (.item(), float(t), "
        ".tolist(), print(t), if t > 0, t[mask]) waits for every queued kernel. One per "
        "batch (d2l's Accumulator.add(float(l.sum()), ...)) serialises CPU and GPU. "
        "torch.cuda.set_sync_debug_mode('warn'|'error') reports each one."
    ),
    source="c10/cuda/CUDAFunctions.cpp warn_or_error_on_sync, called by memcpy_and_sync "
    "and stream_synchronize (c10/cuda/CUDAFunctions.h): .item(), .cpu(), nonzero, ...",
    fixes=(
        Fix("Accumulate metrics on the device; cross to the host once per epoch",
            "total = torch.zeros((), device=device)\nfor X, y in loader:\n"
            "    total += loss.detach()\nprint(total.item() / n)"),
        Fix("Find the syncs", "torch.cuda.set_sync_debug_mode('warn')"),
    ),
    hints=("set_sync_debug_mode", ".item()"),
    cpu_note="needs CUDA: a CPU has nothing to wait for",
)
