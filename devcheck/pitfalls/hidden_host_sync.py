"""Per-batch .item()/float() waits for the GPU: training runs at the speed of syncs."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom


def _batches(dev: object, n: int = 5) -> list[tuple[object, object]]:
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    return [(torch.randn(32, 8, generator=g).to(dev), torch.randint(0, 3, (32,),
             generator=g).to(dev)) for _ in range(n)]


def reproduce(device: str) -> None:
    import torch

    if not device.startswith("cuda"):
        raise Skip("sync debug mode exists for CUDA only")
    dev = torch.device(device)
    net = torch.nn.Linear(8, 3).to(dev)
    batches = _batches(dev)
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

    if not device.startswith("cuda"):
        raise Skip("sync debug mode exists for CUDA only")
    dev = torch.device(device)
    net = torch.nn.Linear(8, 3).to(dev)
    batches = _batches(dev)
    torch.cuda.set_sync_debug_mode("error")
    try:
        total = torch.zeros((), device=dev)
        for X, y in batches:
            total += torch.nn.functional.cross_entropy(net(X), y).detach()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return f"mean loss {total.item() / len(batches):.3f}, one sync per epoch"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="hidden_host_sync",
    title="Hidden host syncs (.item(), float(), print, boolean masks) every batch",
    needs=("cuda",),
    symptoms=(
        Symptom(r"called a synchronizing CUDA operation", "called a synchronizing cuda "
                "operation", "RuntimeError: called a synchronizing CUDA operation"),
    ),
    mechanism=(
        "CUDA kernels run asynchronously; reading a value on the host (.item(), float(t), "
        ".tolist(), print(t), if t > 0, t[mask]) waits for every queued kernel. One per "
        "batch (d2l's Accumulator.add(float(l.sum()), ...)) serialises CPU and GPU. "
        "torch.cuda.set_sync_debug_mode('warn'|'error') reports each one."
    ),
    source="c10/cuda/CUDAFunctions.h warn_or_error_on_sync (checked by cudaMemcpy and "
    "stream synchronisation paths)",
    fixes=(
        Fix("Accumulate metrics on the device; cross to the host once per epoch",
            "total = torch.zeros((), device=device)\nfor X, y in loader:\n"
            "    total += loss.detach()\nprint(total.item() / n)"),
        Fix("Find the syncs", "torch.cuda.set_sync_debug_mode('warn')"),
    ),
    hints=("set_sync_debug_mode", ".item()"),
    cpu_note="needs CUDA: a CPU has nothing to wait for",
)
