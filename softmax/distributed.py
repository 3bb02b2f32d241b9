"""The reference trainer under ``torchrun``: data-parallel softmax regression, checked.

    torchrun --standalone --nproc-per-node 2 -m softmax train --device cpu --epochs 10

torchrun sets ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` and the rendezvous; this module joins
the group (gloo on CPU, NCCL on CUDA with ``set_device(local_rank)``) and adds what a
correct data-parallel run needs, as small hooks around softmax.train's loop:

- one seed for the model on every rank, checked at start-up (parameter count, checksum,
  device type, dtype: an error names the odd rank), and parameters compared again after a
  few steps and at every epoch end;
- ``--batch-size`` stays the *global* batch: each rank takes ``batch / world`` examples and
  gradients are averaged, so N ranks follow the single-process algorithm. The concise model
  is wrapped in torch's ``DistributedDataParallel``; the from-scratch model writes its
  gradient by hand (no autograd for DDP to hook), so it all-reduces that gradient itself,
  one flat buffer per step, which is what DDP's bucket does;
- data: with ``--loader tensor`` each rank keeps only its shard of the resident tensors
  (``rank::world``, cut to equal length so every rank runs the same number of steps); with
  ``--loader dataloader`` a ``DistributedSampler(shuffle, seed, drop_last)`` with
  ``set_epoch(epoch)`` every epoch. Shuffling seeds depend on (seed, rank, epoch), so a
  resumed run at the same world size repeats the original order, and one at another world
  size (``--resume`` works across sizes: the checkpoint holds the whole model) draws a new one;
- metrics are reduced across ranks once per epoch (one all_gather of a few numbers);
- rank 0 alone prints, plots, writes metrics and the checkpoint (atomically), then every
  rank meets at a barrier; ``destroy_process_group`` always runs (in ``finally``).
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from softmax.devices import DeviceError, cuda_device_count, resolve_device
from softmax.model import ConciseSoftmax, ScratchSoftmax, log_softmax

CHECK_AFTER_STEPS = 3  # parameters compared across ranks after this many steps
_SEED_STRIDE = 1_000_003  # seed, rank and epoch mixed into one shuffling seed


class DistributedError(RuntimeError):
    """The ranks disagree (model, step count, device) or cannot run together; names ranks."""


@dataclass(frozen=True)
class DistContext:
    rank: int
    world: int
    local_rank: int
    backend: str
    device: torch.device
    owns_group: bool  # we called init_process_group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def tag(self) -> str:
        return f"rank {self.rank} of {self.world}"


def launched() -> bool:
    """Started by torchrun (or any env:// launcher): RANK, WORLD_SIZE, MASTER_ADDR are set.

    Even a world of 1 (``--nproc-per-node 1`` on a one-GPU machine) runs the distributed
    path: NCCL set-up, the wrapped model and the checks are then exercised for real."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def rank_prefix() -> str:
    """``"[rank 1 of 2] "`` under torchrun, so each rank's error on stderr says whose it is."""
    if not launched():
        return ""
    return f"[rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}] "


def is_main_process() -> bool:
    """True unless this is a rank other than 0 of a torchrun launch: who may print."""
    return os.environ.get("RANK", "0") == "0"


def _device_for_rank(spec: str, local_rank: int) -> torch.device:
    text = spec.strip().lower()
    if text.startswith("cuda:"):
        raise DeviceError(f"--device {spec} under torchrun: each rank uses cuda:LOCAL_RANK "
                          f"(this one cuda:{local_rank}); expected --device cuda or auto. Fix: "
                          f"pass --device cuda, and CUDA_VISIBLE_DEVICES to pick the GPUs")
    device = resolve_device(text)
    if device.type == "mps":
        raise DeviceError("--device mps under torchrun: torch.distributed has no MPS backend; "
                          "expected cpu or cuda. Fix: run one process, or --device cpu")
    if device.type == "cuda":
        count = cuda_device_count()
        if local_rank >= count:
            raise DeviceError(f"LOCAL_RANK {local_rank} but {count} visible GPU(s); expected "
                              f"one GPU per rank. Fix: torchrun --nproc-per-node {count}")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _end_with_the_launcher() -> None:
    """A rank must not outlive torchrun's agent: killed with SIGKILL, the agent cannot stop
    its workers, and they would train on under init, holding GPUs and the rendezvous port.
    Linux signals this rank (SIGTERM: the trainer's clean exit) when its parent dies."""
    from devcheck.probe.libc import set_parent_death_signal

    set_parent_death_signal(int(signal.SIGTERM), parent=os.getppid())


def init_from_env(device_spec: str) -> DistContext | None:
    """Join torchrun's group (None when this process runs alone)."""
    if not launched() and not dist.is_initialized():
        return None
    if os.environ.get("TORCHELASTIC_RUN_ID"):  # torchrun's agent is our parent
        _end_with_the_launcher()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device_for_rank(device_spec, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    if owns:
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=timedelta(minutes=10), **kwargs)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, device,
                       owns)


@contextmanager
def session(device_spec: str) -> Iterator[DistContext | None]:
    """The group for one training run; destroyed on the way out, whatever happened."""
    ctx = init_from_env(device_spec)
    try:
        yield ctx
    finally:
        if ctx is not None and ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def rank_log(ctx: DistContext | None, log: Callable[[str], None]) -> Callable[[str], None]:
    """Rank 0 prints; the others stay silent (their errors still reach stderr)."""
    return log if ctx is None or ctx.is_main else (lambda _msg: None)


# -- the model: agree at start-up, average gradients, stay equal --------------------------
def model_facts(model: Any) -> dict[str, Any]:
    params = [p.detach() for p in model.parameters()]
    flat = torch.cat([p.reshape(-1).double() for p in params]) if params else torch.zeros(1)
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
    return {"count": int(flat.numel()), "checksum": float((flat * weights).sum()),
            "device_type": params[0].device.type if params else "?",
            "dtype": str(params[0].dtype).removeprefix("torch.") if params else "?"}


def _describe(facts: dict[str, Any]) -> str:
    return (f"{facts['count']} parameters (checksum {facts['checksum']:.6g}, "
            f"{facts['device_type']}, {facts['dtype']})")


def check_same_model(ctx: DistContext, model: Any, when: str) -> None:
    """All ranks must hold the same parameters; the error names the ranks that differ."""
    mine = model_facts(model)
    every: list[Any] = [None] * ctx.world
    dist.all_gather_object(every, mine)
    ref = every[0]
    odd = [r for r, f in enumerate(every) if f["count"] != ref["count"]
           or f["device_type"] != ref["device_type"] or f["dtype"] != ref["dtype"]
           or not math.isclose(f["checksum"], ref["checksum"], rel_tol=1e-6, abs_tol=1e-6)]
    if odd:
        r = odd[0]
        raise DistributedError(
            f"ranks disagree on the model {when}: rank {r} has {_describe(every[r])}, rank 0 "
            f"has {_describe(ref)}; expected identical models on every rank. Fix: build the "
            f"model from the same code, config and --seed on every rank (see `devcheck "
            f"pitfalls show ddp_rank_mismatch`)")


class DDPScratch(ScratchSoftmax):
    """The book's model, its hand-written gradient averaged over ranks before each step."""

    def __init__(self, inner: ScratchSoftmax, world: int) -> None:  # noqa: D107
        self.W, self.b, self.world = inner.W, inner.b, world

    def train_step(self, X: torch.Tensor, y: torch.Tensor, lr: float,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(X)
        log_probs = log_softmax(logits)
        loss = -log_probs.gather(1, y.unsqueeze(1)).squeeze(1)
        dW, db = self.gradients(X, logits, y, probs=log_probs.exp())
        flat = torch.cat([dW.reshape(-1), db])  # one bucket, one collective per step
        dist.all_reduce(flat)
        flat /= self.world
        self.W.sub_(flat[:dW.numel()].view_as(dW), alpha=lr)
        self.b.sub_(flat[dW.numel():], alpha=lr)
        return logits, loss


class DDPConcise(ConciseSoftmax):
    """ch. 3.7's model inside torch's DistributedDataParallel; checkpoints stay unwrapped."""

    def __init__(self, inner: ConciseSoftmax, device: torch.device) -> None:  # noqa: D107
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.plain = inner.module
        ids = [device.index] if device.type == "cuda" else None
        self.module = DDP(inner.module, device_ids=ids)  # type: ignore[assignment]
        self.loss_fn, self.optimizer = inner.loss_fn, inner.optimizer

    def parameters(self) -> list[torch.Tensor]:
        return list(self.plain.parameters())

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return list(self.plain.named_parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.plain.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.plain.load_state_dict(state)


def wrap_model(ctx: DistContext, model: Any) -> Any:
    """Check every rank built the same model, then make its steps data-parallel."""
    check_same_model(ctx, model, "at start-up")
    if isinstance(model, ScratchSoftmax):
        return DDPScratch(model, ctx.world)
    return DDPConcise(model, ctx.device)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """Rank- and epoch-dependent shuffling seed (fits a torch.Generator seed)."""
    return (seed + _SEED_STRIDE * (rank + 1) + 7919 * epoch) % (2**63)


# -- the data: each rank its shard, reseeded per epoch ------------------------------------
class RankLoader:
    """A rank's loader: reseeds per (seed, rank, epoch), calls ``set_epoch``, and compares
    parameters across ranks once, after :data:`CHECK_AFTER_STEPS` steps of the first epoch."""

    def __init__(self, inner: Any, ctx: DistContext, seed: int, start_epoch: int, *,
                 generator: torch.Generator | None = None, sampler: Any = None,
                 model: Callable[[], Any] | None = None) -> None:
        self.inner, self.ctx, self.seed, self.epoch = inner, ctx, seed, start_epoch
        self.generator, self.sampler, self.model = generator, sampler, model

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)  # without it every epoch repeats the first order
        if self.generator is not None:
            self.generator.manual_seed(epoch_seed(self.seed, self.ctx.rank, epoch))
        for step, batch in enumerate(self.inner):
            if self.model is not None and step == CHECK_AFTER_STEPS:
                check_same_model(self.ctx, self.model(), f"after {step} steps")
                self.model = None
            yield batch


def local_batch(ctx: DistContext, batch_size: int) -> int:
    if batch_size % ctx.world:
        raise DistributedError(
            f"--batch-size {batch_size} is the global batch and does not split over "
            f"{ctx.world} ranks; expected a multiple of {ctx.world}. Fix: pass --batch-size "
            f"{max(ctx.world, batch_size - batch_size % ctx.world)}")
    return batch_size // ctx.world


def tensor_loaders(run: Any, root: Any) -> tuple[RankLoader, Any, int, int]:
    """This rank's shard of the resident tensors: (train, test, train size, test size)."""
    from softmax.data import TensorLoader, load_tensors

    ctx, config = run.dist, run.config
    per = local_batch(ctx, config.batch_size)
    data = load_tensors(root, run.device)
    n = len(data.train_labels) // ctx.world * ctx.world  # equal shards: equal step counts
    # copies, so the whole dataset is freed and each rank holds only its shard
    X = data.train_images[ctx.rank:n:ctx.world].contiguous()
    y = data.train_labels[ctx.rank:n:ctx.world].contiguous()
    gen = run.shuffle  # on the device; its state goes into rank 0's checkpoint
    train = RankLoader(TensorLoader(X, y, per, shuffle=True, generator=gen), ctx,
                       config.seed, run.start_epoch, generator=gen, model=lambda: run.model)
    tX = data.test_images[ctx.rank::ctx.world].contiguous()
    ty = data.test_labels[ctx.rank::ctx.world].contiguous()
    del data
    test = TensorLoader(tX, ty, max(per, 1024), shuffle=False)
    return train, test, len(y), len(ty)


def dataloader_loaders(run: Any, root: Any) -> tuple[RankLoader, Any, int, int]:
    """The book's DataLoader, with a DistributedSampler (shuffle, one seed, drop_last)."""
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    from softmax.data import book_dataloaders, quiet_worker

    ctx, config = run.dist, run.config
    per = local_batch(ctx, config.batch_size)
    train_dl, test_dl = book_dataloaders(root, per, config.workers, persistent=False)
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_dl.dataset, num_replicas=ctx.world, rank=ctx.rank, shuffle=True,
        seed=config.seed, drop_last=True)  # no padding: no duplicate sample counted twice
    gen = run.shuffle  # on the CPU here: worker seeds, rank- and epoch-dependent
    workers = train_dl.num_workers
    train = DataLoader(train_dl.dataset, per, sampler=sampler, num_workers=workers,
                       generator=gen, worker_init_fn=quiet_worker)
    test_set = Subset(test_dl.dataset, range(ctx.rank, len(test_dl.dataset), ctx.world))
    test = DataLoader(test_set, max(per, 1024), shuffle=False, num_workers=workers,
                      worker_init_fn=quiet_worker)
    loader = RankLoader(train, ctx, config.seed, run.start_epoch, generator=gen,
                        sampler=sampler, model=lambda: run.model)
    return loader, test, len(sampler), len(test_set)


def attach_data(run: Any, root: Any) -> None:
    """softmax.train.attach_data's distributed twin: loaders, sizes, a guard naming the rank."""
    from devcheck.guard import StepGuard
    from softmax.data import NUM_CLASSES

    build = tensor_loaders if run.config.loader == "tensor" else dataloader_loaders
    run.train_iter, run.test_iter, n_train, n_test = build(run, root)
    run.dist_sizes = (n_train, n_test)
    run.steps = len(run.train_iter)
    if run.config.guard:
        where = "the tensor loader" if run.config.loader == "tensor" else "the DataLoader"
        run.guard = StepGuard(run.device, num_classes=NUM_CLASSES,
                              source=f"{where} ({run.dist.tag()})")


# -- once per epoch: reduce, compare, rank 0 writes, everyone waits ------------------------
def reduce_epoch(run: Any, m: Any) -> Any:
    """The epoch's figures over all ranks (one all_gather), parameters compared on the way."""
    from dataclasses import replace

    ctx = run.dist
    n_train, n_test = run.dist_sizes
    mine = {"m": m, "n": n_train, "t": n_test, "model": model_facts(run.model)}
    every: list[Any] = [None] * ctx.world
    dist.all_gather_object(every, mine)
    ref = every[0]["model"]
    for r, e in enumerate(every):
        if not math.isclose(e["model"]["checksum"], ref["checksum"], rel_tol=1e-6,
                            abs_tol=1e-6):
            raise DistributedError(
                f"ranks disagree on the model after epoch {m.epoch}: rank {r} has "
                f"{_describe(e['model'])}, rank 0 has {_describe(ref)}; expected identical "
                f"parameters after every step. Fix: every rank must take the same steps with "
                f"averaged gradients (no rank-dependent lr, model or skipped steps)")
    n = sum(e["n"] for e in every)
    t = sum(e["t"] for e in every)
    slowest = max(e["m"].train_seconds for e in every)
    peaks = [e["m"].peak_memory_bytes for e in every if e["m"].peak_memory_bytes is not None]
    return replace(
        m, train_loss=sum(e["m"].train_loss * e["n"] for e in every) / max(n, 1),
        train_acc=sum(e["m"].train_acc * e["n"] for e in every) / max(n, 1),
        test_acc=sum(e["m"].test_acc * e["t"] for e in every) / max(t, 1),
        seconds=max(e["m"].seconds for e in every), train_seconds=slowest,
        samples_per_s=n / slowest if slowest > 0 else 0.0,
        device=f"{m.device} x{ctx.world} ({ctx.backend})",
        peak_memory_bytes=max(peaks) if peaks else None)


def end_epoch(run: Any, metrics: Any, write: Callable[[Any, Any], None]) -> None:
    """Reduce, then rank 0 alone runs ``write`` (checkpoint, metrics, print, plot); barrier."""
    reduced = reduce_epoch(run, metrics)
    if run.dist.is_main:
        write(run, reduced)
    else:
        run.result.epochs.append(reduced)
    dist.barrier()  # the checkpoint is complete before any rank goes on (or exits)
