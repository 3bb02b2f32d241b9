"""The book's training loop (``train_epoch_ch3``, ``evaluate_accuracy``, ``train_ch3``), made
correct on every device and cheap to watch.

What changed from the book, and why:
- every batch is moved to one explicit ``device`` (no global default device);
- metrics accumulate on the device and cross to the host once per epoch (the book's
  ``float(...)`` per batch makes a GPU wait for the host at every step);
- the placement guard (devcheck.guard) checks each step without reading values;
- each epoch ends with an atomic checkpoint, so a killed run loses at most one epoch, and
  ``--resume`` continues with the same batch order as the uninterrupted run.

Layout of a run, for readers and for hooks (e.g. distributed training): :func:`start_run`
is the one place where the model (and its optimizer), the loaders and the guard are built
and a checkpoint is resumed; :func:`end_epoch` is the one place per epoch where the metrics
are final and the checkpoint and metrics file are written. Settings: softmax.config;
devices: softmax.devices; checkpoint files and the folder lock: softmax.checkpoint; the
epoch records and the metrics JSON: softmax.metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from devcheck.guard import NonFiniteLossError, StepGuard
from softmax import distributed
from softmax.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    MODEL_KINDS,
    CheckpointError,
    CheckpointLock,
    load_checkpoint,
    load_model_state,
    model_from_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    shuffle_state,
)
from softmax.config import ConfigError, TrainConfig
from softmax.data import NUM_CLASSES, TensorLoader, book_dataloaders, load_tensors, locate
from softmax.devices import (
    DeviceError,
    cpu_threads,
    cuda_reason,
    peak_memory_bytes,
    reset_peak_memory,
    resolve_device,
)
from softmax.metrics import (
    EpochMetrics,
    TrainResult,
    format_epoch,
    metrics_payload,
    write_metrics,
)
from softmax.model import Model, accuracy, make_model


# -- the book's functions, on one device -----------------------------------------------------
class Accumulator:
    """The book's Accumulator, without its per-batch ``float()`` (a host sync on a GPU).

    It keeps each batch's tensors (losses, logits, labels: a few MB per epoch here) and reduces
    them on the device in one go when asked, so a step costs no extra kernel and no sync.
    """

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor | None = None,
            ) -> None:
        self.logits.append(logits)
        self.labels.append(y)
        if loss is not None:
            self.losses.append(loss)

    def totals(self) -> tuple[float, float, int]:
        """(sum of losses, correct predictions, examples): the one host sync."""
        if not self.labels:
            return 0.0, 0.0, 0
        y = torch.cat(self.labels)
        wide = torch.float32 if y.device.type == "mps" else torch.float64  # MPS: no float64
        correct = accuracy(torch.cat(self.logits), y).to(wide)  # float32 counts: exact to 2**24
        loss = torch.cat(self.losses).sum().to(wide) if self.losses else correct * 0
        loss_sum, n_correct = torch.stack([loss, correct]).tolist()
        return loss_sum, n_correct, len(y)


def to_device(X: torch.Tensor, y: torch.Tensor, device: torch.device,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    non_blocking = device.type == "cuda"
    return X.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)


@torch.no_grad()
def evaluate_accuracy(model: Model, data_iter: Iterable, device: torch.device) -> float:
    metric = Accumulator()
    for X, y in data_iter:
        X, y = to_device(X, y, device)
        metric.add(model.logits(X), y)
    _, correct, total = metric.totals()
    return correct / total


def train_epoch_ch3(model: Model, train_iter: Iterable, lr: float | Callable[[int], float],
                    device: torch.device, guard: StepGuard | None = None, progress: Any = None,
                    ) -> tuple[float, float, int]:
    """One epoch of minibatch SGD; returns (mean loss, accuracy, examples) read once.

    ``lr`` is a number, or a function of the step index (0-based) within the epoch."""
    metric = Accumulator()
    params = model.named_parameters() if guard is not None else []
    for step, (X, y) in enumerate(train_iter):
        X, y = to_device(X, y, device)
        if guard is not None:
            guard.check_inputs(X, y, params)
        y_hat, loss = model.train_step(X, y, lr(step) if callable(lr) else lr)
        if guard is not None:
            guard.check_outputs(y_hat, loss)
        metric.add(y_hat, y, loss)
        if progress is not None:
            progress.update(1)
    loss_sum, correct, seen = metric.totals()
    return loss_sum / max(seen, 1), correct / max(seen, 1), seen


# -- one run: its state, built in one place --------------------------------------------------
@dataclass
class Run:
    """What the loop carries from epoch to epoch (instead of a dozen parameters)."""

    config: TrainConfig
    device: torch.device
    model: Model
    shuffle: torch.Generator  # orders the training batches; saved with each checkpoint
    result: TrainResult
    checkpoint: Path | None
    log: Callable[[str], None]
    on_epoch: Callable[[EpochMetrics], None] | None = None
    epoch_extras: Callable[[], dict[str, Any]] | None = None  # --watch's per-epoch figures
    progress: bool | None = None
    start_epoch: int = 1
    train_iter: Iterable = ()
    test_iter: Iterable = ()
    steps: int = 0
    guard: StepGuard | None = None
    dist: distributed.DistContext | None = None  # set under torchrun
    dist_sizes: tuple[int, int] = (0, 0)  # this rank's train and test examples per epoch


def _shuffle_generator(config: TrainConfig, device: torch.device) -> torch.Generator:
    """The tensor loader shuffles on the device; the DataLoader's sampler on the host."""
    where = device if config.loader == "tensor" else torch.device("cpu")
    return torch.Generator(device=where).manual_seed(config.seed)


def start_run(config: TrainConfig, log: Callable[[str], None],
              ctx: distributed.DistContext | None = None) -> Run:
    """Resolve the device, build the model (and optimizer), resume if asked; no data yet.

    Under torchrun (``ctx``) the device is this rank's and the model is checked equal on
    every rank, then made data-parallel."""
    device = ctx.device if ctx is not None else resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = make_model(config.model, device, torch.Generator().manual_seed(config.seed),
                       config.lr)
    if ctx is not None:
        model = distributed.wrap_model(ctx, model)
    run = Run(config, device, model, _shuffle_generator(config, device),
              TrainResult(device=str(device), config=config), config.checkpoint_path, log,
              dist=ctx)
    if config.resume and run.checkpoint is not None and run.checkpoint.exists():
        _resume(run, run.checkpoint)
    elif config.resume:
        log(f"--resume: no checkpoint at {run.checkpoint}; starting from epoch 1")
    return run


def _resume(run: Run, path: Path) -> None:
    payload = load_checkpoint(path, run.device)
    config = run.config
    if payload["model"] != config.model:
        raise CheckpointError(f"{path} holds a {payload['model']!r} model; expected "
                              f"{config.model!r}. Use --model {payload['model']} or another "
                              f"--checkpoint-dir.")
    state = shuffle_state(payload, path)
    load_model_state(run.model, payload, path)
    try:
        run.model.load_extra_state(payload.get("extra") or {})
        history = [EpochMetrics(**m) for m in payload.get("history") or []]
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} has a damaged optimizer state or history "
                              f"({type(exc).__name__}: {str(exc)[:80]}); expected what "
                              f"`softmax train` writes. Fix: delete it to start over"
                              ) from None
    saved = (payload.get("loader", "tensor"), payload.get("device_type"))
    if saved == (config.loader, run.shuffle.device.type):
        try:
            run.shuffle.set_state(state)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {path}: its shuffling state does not fit this "
                                  f"generator ({str(exc)[:80]}). Fix: delete it to start "
                                  f"over") from None
    else:
        run.log(f"note: {path} saved the batch order of --loader {saved[0]} on {saved[1]}; "
                f"this run (--loader {config.loader} on {run.shuffle.device.type}) draws a "
                f"new order from --seed {config.seed}, so it will not repeat the first run")
    epoch = int(payload["epoch"])
    if history and history[-1].epoch != epoch:
        raise CheckpointError(f"checkpoint {path} says epoch {epoch} but its history ends at "
                              f"epoch {history[-1].epoch}; expected the two to agree: the file "
                              f"is damaged or was edited. Fix: delete it to start over")
    run.result.epochs = history
    run.result.checkpoint = str(path)
    run.start_epoch = run.result.resumed_from_epoch = epoch + 1
    run.log(f"resumed from {path} after epoch {epoch}")


def attach_data(run: Run) -> None:
    """Find the data and build both loaders and the guard for ``run``."""
    config, device = run.config, run.device
    root = locate(config.data_root)
    if run.dist is not None:  # this rank's shard, reseeded per epoch, a guard naming the rank
        distributed.attach_data(run, root)
        return
    if config.loader == "dataloader":
        # not persistent: each epoch's workers take their seeds from run.shuffle, whose
        # state the checkpoint saves, so a resumed run repeats the uninterrupted one exactly
        run.train_iter, run.test_iter = book_dataloaders(
            root, config.batch_size, config.workers, generator=run.shuffle, persistent=False)
        source = "the DataLoader"
    else:
        data = load_tensors(root, device)
        run.train_iter = TensorLoader(data.train_images, data.train_labels, config.batch_size,
                                      shuffle=True, generator=run.shuffle)
        run.test_iter = TensorLoader(data.test_images, data.test_labels,
                                     max(config.batch_size, 1024), shuffle=False)
        source = "the tensor loader"
    run.steps = len(run.train_iter)
    if config.guard:
        run.guard = StepGuard(device, num_classes=NUM_CLASSES, source=source)


def train_ch3(config: TrainConfig, *, on_epoch: Callable[[EpochMetrics], None] | None = None,
              log: Callable[[str], None] = print, progress: bool | None = None,
              epoch_extras: Callable[[], dict[str, Any]] | None = None) -> TrainResult:
    """Train for ``config.epochs`` (resuming if asked); raise the module's errors, never exit.

    Holds the checkpoint folder's lock for the whole run, so a second trainer on the same
    ``checkpoint_dir`` stops at once instead of overwriting this one's ``last.pt``. Under
    torchrun, every rank runs this; softmax.distributed joins and always leaves the group."""
    with distributed.session(config.device) as ctx:
        return _train_ch3(config, ctx, on_epoch, distributed.rank_log(ctx, log), progress,
                          epoch_extras)


def _train_ch3(config: TrainConfig, ctx: distributed.DistContext | None,
               on_epoch: Callable[[EpochMetrics], None] | None, log: Callable[[str], None],
               progress: bool | None,
               epoch_extras: Callable[[], dict[str, Any]] | None = None) -> TrainResult:
    main = ctx is None or ctx.is_main  # rank 0 alone holds the lock and writes
    lock = CheckpointLock(config.checkpoint_dir) if config.checkpoint_dir and main else None
    if lock is not None:
        lock.acquire()
    try:
        if lock is not None:
            if lock.took_over:
                log(f"note: took over the stale lock {lock.path} of {lock.took_over}")
            remove_stale_temporaries(lock.path.parent)
        run = start_run(config, log, ctx)
        run.on_epoch, run.progress = on_epoch, progress if main else False
        run.epoch_extras = epoch_extras
        if run.start_epoch > config.epochs:
            log(f"nothing to train: {run.checkpoint} already holds {run.start_epoch - 1} "
                f"epoch(s) and --epochs {config.epochs} is the total, not the extra. Fix: "
                f"pass --epochs {run.start_epoch} or more to continue, or drop --resume to "
                f"start over")
            return run.result
        attach_data(run)
        threads = config.threads
        if threads is None and run.device.type == "cpu" and config.loader == "tensor":
            threads = 1
        with cpu_threads(threads):
            for epoch in range(run.start_epoch, config.epochs + 1):
                if ctx is None:
                    end_epoch(run, run_epoch(run, epoch))
                else:  # reduce over ranks; rank 0 runs end_epoch; then a barrier
                    distributed.end_epoch(run, run_epoch(run, epoch), end_epoch)
        return run.result
    finally:
        if lock is not None:
            lock.release()


def end_epoch(run: Run, metrics: EpochMetrics) -> None:
    """The epoch's figures are final: record them, checkpoint, write the metrics, report."""
    config, result = run.config, run.result
    result.epochs.append(metrics)
    if run.epoch_extras is not None:
        result.watch.append({"epoch": metrics.epoch, **run.epoch_extras()})
    if run.guard is not None:
        result.guard = list(run.guard.reports)
    if run.checkpoint is not None:
        save_checkpoint(run.checkpoint, {
            "format": FORMAT, "epoch": metrics.epoch, "model": config.model,
            "state": run.model.state_dict(), "extra": run.model.extra_state(),
            "loader": config.loader, "device_type": run.shuffle.device.type,
            "generator": run.shuffle.get_state(), "settings": asdict(config),
            "history": [asdict(m) for m in result.epochs]})
        result.checkpoint = str(run.checkpoint)
    if config.metrics_json:
        write_metrics(Path(config.metrics_json), result)
    run.log(format_epoch(metrics, config.epochs))
    if run.on_epoch is not None:
        run.on_epoch(metrics)


def lr_for_epoch(config: TrainConfig, epoch: int, steps: int,
                 ) -> float | Callable[[int], float]:
    """The book's constant rate; with "anneal", the final epoch decays it linearly to ~0.

    Why: at lr 0.1 the last iterate of plain SGD wanders, so the final test accuracy varies
    by about +-0.01 with the shuffling seed (0.808-0.834 over seeds 0-6); annealing only the
    last epoch removes that spread (0.834-0.836) without changing the first nine epochs.
    (``lr_schedule`` was validated when the config was built, before any epoch ran.)
    """
    if config.lr_schedule == "constant" or epoch != config.epochs:
        return config.lr
    return lambda step: config.lr * (steps - step) / steps


def run_epoch(run: Run, epoch: int) -> EpochMetrics:
    """Train one epoch, then evaluate; the only host reads are the epoch's totals."""
    from softmax.book import progress_bar_class  # tqdm.auto warns in Jupyter w/o ipywidgets

    tqdm = progress_bar_class()

    device, guard = run.device, run.guard
    reset_peak_memory(device)
    bar = tqdm(total=run.steps, desc=f"epoch {epoch}/{run.config.epochs}", leave=False,
               disable=(not run.progress) if run.progress is not None else None)
    lr = lr_for_epoch(run.config, epoch, run.steps)
    t0 = time.perf_counter()
    try:
        if guard is not None:
            with guard.epoch(epoch):
                loss, acc, seen = train_epoch_ch3(run.model, run.train_iter, lr, device, guard,
                                                  bar)
        else:
            loss, acc, seen = train_epoch_ch3(run.model, run.train_iter, lr, device, None, bar)
    finally:
        bar.close()
    if not math.isfinite(loss):  # the guard names the step; without it, the epoch will do
        raise NonFiniteLossError(epoch, None, f"the loss became non-finite (nan/inf) in epoch "
                                 f"{epoch} (run without --no-guard to find the step). Fix: "
                                 f"lower the learning rate (--lr).")
    t_train = time.perf_counter() - t0
    test_acc = evaluate_accuracy(run.model, run.test_iter, device)
    seconds = time.perf_counter() - t0
    syncs = guard.reports[-1].syncs_per_step if guard is not None and guard.reports else None
    return EpochMetrics(epoch, loss, acc, test_acc, seconds, t_train, seen / t_train,
                        str(device), peak_memory_bytes(device), syncs)


__all__ = ["CHECKPOINT_NAME", "MODEL_KINDS", "Accumulator", "CheckpointError", "ConfigError",
           "DeviceError", "EpochMetrics", "Run", "TrainConfig", "TrainResult", "cuda_reason",
           "end_epoch", "evaluate_accuracy", "format_epoch", "load_checkpoint",
           "metrics_payload", "model_from_checkpoint",
           "resolve_device", "run_epoch", "save_checkpoint", "start_run", "train_ch3",
           "train_epoch_ch3"]
