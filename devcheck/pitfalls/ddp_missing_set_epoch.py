"""DistributedSampler without ``set_epoch``: every epoch repeats the first one's order."""

from __future__ import annotations

from typing import Any

from devcheck.pitfalls._base import Fix, Pitfall, Symptom

N_SAMPLES, EPOCHS = 16, 3


def _epoch_orders(rank: int, world: int, call_set_epoch: bool) -> dict[str, Any]:
    """What DistributedSampler hands this rank each epoch, checked against the others."""
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    data: Any = range(N_SAMPLES)  # any sized sequence; the sampler only uses len()
    sampler: DistributedSampler[int] = DistributedSampler(
        data, num_replicas=world, rank=rank, shuffle=True, seed=0,
        drop_last=True)
    orders = []
    for epoch in range(EPOCHS):
        if call_set_epoch:
            sampler.set_epoch(epoch)
        orders.append(list(sampler))
    every: list[Any] = [None] * world
    dist.all_gather_object(every, orders)  # every rank's shards, to check they partition
    for epoch in range(EPOCHS):
        seen = sorted(i for shards in every for i in shards[epoch])
        if seen != list(range(N_SAMPLES)):
            raise RuntimeError(f"epoch {epoch}: the ranks' shards do not partition the data")
    return {"orders": orders}


def _check_orders(rank: int, orders: list[list[int]]) -> None:
    """devcheck's check: an identical order in consecutive epochs means no set_epoch."""
    for epoch in range(1, len(orders)):
        if orders[epoch] == orders[epoch - 1]:
            raise RuntimeError(
                f"DistributedSampler gave rank {rank} the same order in epoch {epoch - 1} "
                f"and epoch {epoch} ({orders[epoch][:6]}...): sampler.set_epoch(epoch) is "
                "never called, so every epoch repeats the first shuffle")


def reproduce(device: str) -> None:
    from devcheck.dist.spawn import run_ranks

    outcomes = run_ranks(_epoch_orders, 2, args=(False,), timeout_s=60, store_timeout_s=20)
    for o in outcomes:
        if not o.ok:
            raise RuntimeError(f"rank {o.rank} failed: {o.error_text}")
    for o in outcomes:
        _check_orders(o.rank, o.value["orders"])


def fixed(device: str) -> str:
    from devcheck.dist.spawn import run_ranks

    outcomes = run_ranks(_epoch_orders, 2, args=(True,), timeout_s=60, store_timeout_s=20)
    for o in outcomes:
        if not o.ok:
            raise RuntimeError(f"rank {o.rank} failed: {o.error_text}")
        _check_orders(o.rank, o.value["orders"])
    first = outcomes[0].value["orders"]
    return (f"set_epoch(epoch): rank 0 saw {first[0][:4]}..., then {first[1][:4]}...; the 2 "
            f"ranks' shards partition the {N_SAMPLES} samples in each of {EPOCHS} epochs")


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="ddp_missing_set_epoch",
    title="DistributedSampler without set_epoch(epoch): the same shuffle every epoch",
    needs=("cpu",),  # gloo on the CPU, whatever GPUs the machine has
    symptoms=(
        Symptom(r"DistributedSampler gave rank \d+ the same order in epoch \d+ and epoch \d+",
                "the same order in epoch", "RuntimeError: DistributedSampler gave rank 0 the "
                "same order in epoch 0 and epoch 1 ([5, 12, 3, 0, 9, 14]...): "
                "sampler.set_epoch(epoch) is never called, so every epoch repeats the first "
                "shuffle"),
        Symptom(r"set_epoch\(\)? (?:is )?(?:never|not) called", "set_epoch",
                "warning: set_epoch() not called on the DistributedSampler: each epoch will "
                "use the same ordering", variant="linters / trainers' warnings", weight=0.7),
    ),
    mechanism=(
        "DistributedSampler shuffles with a generator seeded by seed + epoch, and its "
        "epoch stays 0 until set_epoch is called. shuffle=True then gives every epoch the "
        "same permutation on every rank (pytorch #31771). Nothing raises: the loss curve "
        "looks normal, just a little worse, as if there were no shuffling between epochs. "
        "Lightning Fabric calls set_epoch for you; plain DDP loops must."
    ),
    source="torch/utils/data/distributed.py DistributedSampler.__iter__ "
    "(g.manual_seed(self.seed + self.epoch)); nothing raises",
    fixes=(
        Fix("Call set_epoch at the start of every epoch, before iterating",
            "for epoch in range(epochs):\n    sampler.set_epoch(epoch)\n"
            "    for X, y in loader:\n        ..."),
        Fix("Give every rank the same seed and drop uneven tails",
            "DistributedSampler(ds, shuffle=True, seed=args.seed, drop_last=True)"),
    ),
    frames=("torch/utils/data/distributed.py",),
    hints=("DistributedSampler", "set_epoch", "shuffle"),
    cpu_note="reproduced with 2 gloo ranks: the ranks' orders over 3 epochs are compared",
)
