"""``softmax train --book``: the book's chapter 3.6 script (softmax.book), top to bottom.

The settings it honours, the run itself (seeded, guarded, one run per checkpoint folder) and
its outputs: a checkpoint ``softmax predict`` reads and the metrics JSON. No printing here:
``log`` and ``on_epoch`` are the caller's (softmax.book_cli prints for the command line).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from devcheck.guard import StepGuard
from softmax.book import (
    BookEpoch,
    cross_entropy,
    get_dataloader_workers,
    init_params,
    load_data_fashion_mnist,
    make_net,
    sgd,
    train_ch3,
)
from softmax.data import NUM_CLASSES, locate


@dataclass(frozen=True)
class BookConfig:
    """The settings ``softmax train --book`` honours (the book's: lr 0.1, batch 256)."""

    epochs: int = 10
    lr: float = 0.1
    batch_size: int = 256
    device: str = "auto"
    data_root: str | None = None
    workers: int | None = None  # None: get_dataloader_workers()
    seed: int = 0
    guard: bool = True
    checkpoint_dir: str | None = "runs/softmax"
    metrics_json: str | None = None

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("workers", 0)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"BookConfig.{name}={value!r}; expected an integer >= {low}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"BookConfig.lr={self.lr!r}; expected a finite number > 0")


@dataclass
class BookResult:
    device: str
    config: BookConfig
    epochs: list[BookEpoch] = field(default_factory=list)
    workers: int = 0
    checkpoint: str | None = None


def run_book(config: BookConfig, *, on_epoch: Callable[[BookEpoch], None] | None = None,
             log: Callable[[str], None] = print, progress: bool | None = None) -> BookResult:
    """The book's chapter 3.6 script, top to bottom, on ``config.device``."""
    from softmax.devices import resolve_device

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)  # DataLoader workers' base seed comes from here
    root = locate(config.data_root, log=log)
    workers = get_dataloader_workers() if config.workers is None else config.workers
    shuffle = torch.Generator().manual_seed(config.seed)  # a CPU generator: see sampler note
    train_iter, test_iter = load_data_fashion_mnist(config.batch_size, root, device, workers,
                                                    shuffle)
    W, b = init_params(device, torch.Generator().manual_seed(config.seed))
    net = make_net(W, b)
    lr = config.lr

    def updater(batch_size: int) -> None:
        return sgd([W, b], lr, batch_size)

    guard = (StepGuard(device, num_classes=NUM_CLASSES, source="the DataLoader")
             if config.guard else None)
    result = BookResult(device=str(device), config=config, workers=workers)
    log(f"the book's code path (ch. 3.6) on {device}: autograd, DataLoader with "
        f"{workers} worker{'s' if workers != 1 else ''}, lr {lr:g} constant")

    def after_epoch(m: BookEpoch) -> None:
        result.epochs.append(m)
        if config.checkpoint_dir:
            result.checkpoint = str(save_book_checkpoint(
                Path(config.checkpoint_dir) / "last.pt", W, b, m.epoch, config, result.epochs))
        if config.metrics_json:
            write_metrics(Path(config.metrics_json), result)
        log(format_book_epoch(m, config.epochs))
        if on_epoch is not None:
            on_epoch(m)

    with checkpoint_lock(config.checkpoint_dir):
        train_ch3(net, train_iter, test_iter, cross_entropy, config.epochs, updater, device,
                  guard=guard, params=[("W", W), ("b", b)], on_epoch=after_epoch,
                  progress=progress)
    return result


def checkpoint_lock(directory: str | None) -> Any:
    """The trainer's one-run-per-folder lock (two runs would overwrite each other's last.pt)."""
    from contextlib import nullcontext

    if not directory:
        return nullcontext()
    from softmax.checkpoint import CheckpointLock

    return CheckpointLock(directory)


def format_book_epoch(m: BookEpoch, epochs: int) -> str:
    text = (f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f}  train acc "
            f"{m.train_acc:.4f}  test acc {m.test_acc:.4f}  {m.seconds:.3f} s  "
            f"{m.samples_per_s:,.0f} samples/s  {m.device}")
    if m.syncs_per_step is not None:
        text += f"  syncs/step {m.syncs_per_step:.2f}"
    return text


def save_book_checkpoint(path: Path, W: torch.Tensor, b: torch.Tensor, epoch: int,
                         config: BookConfig, history: list[BookEpoch]) -> Path:
    """A checkpoint ``softmax predict`` reads: the scratch model's format (``W`` stored as
    its (10, 784) transpose), written atomically by the trainer's own writer."""
    from softmax.checkpoint import save_checkpoint

    payload = {"format": 1, "epoch": epoch, "model": "scratch", "book": True,
               "state": {"W": W.detach().T.contiguous(), "b": b.detach().clone()},
               "device_type": W.device.type, "settings": asdict(config),
               "history": [asdict(m) for m in history]}
    save_checkpoint(path, payload)
    return path


def write_metrics(path: Path, result: BookResult) -> Path:
    import json

    from devcheck.fileio import atomic_write_text

    payload = {"device": result.device, "book": True, "settings": asdict(result.config),
               "workers": result.workers, "epochs": [asdict(m) for m in result.epochs]}
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n", "metrics JSON")


__all__ = ["BookConfig", "BookResult", "format_book_epoch", "run_book", "save_book_checkpoint",
           "write_metrics"]
