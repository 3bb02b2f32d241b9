"""Ranks build different models (shape from each rank's own data), so DDP refuses."""

from __future__ import annotations

from typing import Any

from devcheck.pitfalls._base import Fix, Pitfall, Symptom

_LABELS = (0, 0, 1, 1, 2, 0, 2, 1)  # rank 0 gets labels 0, 1, 2, 2; rank 1 only 0, 1, 0, 1


def _num_classes_from_my_shard(rank: int, world: int) -> int:
    shard = _LABELS[rank::world]  # what DistributedSampler hands this rank
    return max(shard) + 1


def _ddp_from_shard(rank: int, world: int) -> int:
    """The bug: the model's width comes from this rank's shard, so ranks disagree."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    net = torch.nn.Linear(4, _num_classes_from_my_shard(rank, world))
    DDP(net)  # verifies parameter shapes across ranks before the first step
    return net.out_features


def _ddp_agreed(rank: int, world: int) -> list[float]:
    """The fix: derive the shape from the whole dataset (or agree on it), one seed."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    n = torch.tensor([_num_classes_from_my_shard(rank, world)])
    dist.all_reduce(n, op=dist.ReduceOp.MAX)  # or: len(dataset.classes)
    torch.manual_seed(0)
    net = DDP(torch.nn.Linear(4, int(n.item())))
    g = torch.Generator().manual_seed(rank)  # each rank its own batch
    x, y = torch.randn(8, 4, generator=g), torch.randint(0, int(n.item()), (8,), generator=g)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    flat = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    return [float(flat.sum()), float(n.item())]


def _raise_rank_error(outcomes: list[Any]) -> None:
    from devcheck.dist.spawn import first_error

    own = [o for o in outcomes if o.error and PITFALL.matches_symptom(o.error_text)]
    bad = own[0] if own else first_error(outcomes)
    if bad is not None:
        raise RuntimeError(f"rank {bad.rank}: {bad.error}")


def reproduce(device: str) -> None:
    from devcheck.dist.spawn import run_ranks

    _raise_rank_error(run_ranks(_ddp_from_shard, 2, timeout_s=60, store_timeout_s=20))


def fixed(device: str) -> str:
    from devcheck.dist.spawn import run_ranks

    outcomes = run_ranks(_ddp_agreed, 2, timeout_s=60, store_timeout_s=20)
    _raise_rank_error(outcomes)
    sums = [o.value[0] for o in outcomes]
    if abs(sums[0] - sums[1]) > 1e-6:
        raise RuntimeError(f"gradients differ across ranks after all-reduce: {sums}")
    return (f"2 gloo ranks agreed on {int(outcomes[0].value[1])} classes; DDP built and "
            "all-reduced identical gradients")


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="ddp_rank_mismatch",
    title="DDP ranks build different models (shape or count of parameters differ)",
    needs=("cpu",),  # gloo on the CPU, whatever GPUs the machine has
    symptoms=(
        Symptom(r"DDP expects same model across all ranks, but Rank \d+ has \d+ params, "
                r"while rank \d+ has inconsistent \d+ params", "ddp expects same model across "
                "all ranks", "RuntimeError: DDP expects same model across all ranks, but Rank "
                "0 has 2 params, while rank 1 has inconsistent 4 params."),
        Symptom(r"\[\d+\]: params\[\d+\] in this process with sizes \[[\d, ]*\] appears not "
                r"to match sizes of the same param in process \d+", "appears not to match "
                "sizes of the same param", "RuntimeError: [1]: params[0] in this process with "
                "sizes [2, 4] appears not to match sizes of the same param in process 0.",
                variant="same count, different shapes"),
        Symptom(r"replicas\[\d+\]\[\d+\] in this process with sizes \[[\d, ]*\] appears not "
                r"to match sizes", "appears not to match sizes", "RuntimeError: replicas[0][0] "
                "in this process with sizes [2, 4] appears not to match sizes of the same "
                "param in process 0.", variant="torch < 1.11"),
        Symptom(r"ranks disagree on the model: rank \d+ has", "ranks disagree on the model",
                "RuntimeError: ranks disagree on the model: rank 1 has 7850 parameters "
                "(checksum 12.5, cpu, float32), rank 0 has 7850 (checksum 3.1, cpu, float32)",
                variant="devcheck's start-up check (softmax under torchrun)", weight=0.85),
    ),
    mechanism=(
        "DistributedDataParallel's constructor all-gathers every parameter's shape and "
        "refuses when ranks differ: gradients are all-reduced bucket by bucket, which only "
        "works when every rank holds the same tensors in the same order. Shapes derived "
        "from each rank's own shard (classes, vocabulary), rank-dependent branches, or "
        "different code/config per node cause it. Same shapes with different values (no "
        "common seed) pass silently: DDP broadcasts rank 0's weights at construction."
    ),
    source="torch/nn/parallel/distributed.py DistributedDataParallel.__init__ -> "
    "_verify_param_shape_across_processes (torch/csrc/distributed/c10d/comm.cpp)",
    fixes=(
        Fix("Derive shapes from the whole dataset or config, not the rank's shard",
            "num_classes = len(dataset.classes)   # not max(my_shard_labels) + 1"),
        Fix("Or agree on them before building the model",
            "n = torch.tensor([local_n]); dist.all_reduce(n, op=dist.ReduceOp.MAX)"),
        Fix("Build the same model everywhere with one seed, then wrap",
            "torch.manual_seed(0)\nnet = DDP(build_model(cfg).to(device), "
            "device_ids=[local_rank])"),
    ),
    frames=("torch/nn/parallel/distributed.py",),
    hints=("DistributedDataParallel", "DDP", "rank"),
    cpu_note="reproduced with 2 gloo ranks on the CPU",
)
