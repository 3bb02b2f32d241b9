"""The book's training loop (``train_epoch_ch3``, ``evaluate_accuracy``, ``train_ch3``), made
correct on every device and cheap to watch.

What changed from the book, and why:
- every batch is moved to one explicit ``device`` (no global default device);
- metrics accumulate on the device and cross to the host once per epoch (the book's
  ``float(...)`` per batch makes a GPU wait for the host at every step);
- the placement guard (devcheck.guard) checks each step without reading values;
- each epoch ends with an atomic checkpoint, so a killed run loses at most one epoch.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from devcheck.guard import EpochGuardReport, NonFiniteLossError, StepGuard
from softmax.data import NUM_CLASSES, TensorLoader, book_dataloaders, load_tensors, locate
from softmax.model import Model, accuracy, make_model

CHECKPOINT_NAME = "last.pt"
_CHECKPOINT_KEYS = ("epoch", "model", "state")
MODEL_KINDS = ("scratch", "concise")


class DeviceError(Exception):
    """The requested device cannot be used here; the message says why and what to use."""


class CheckpointError(Exception):
    """A checkpoint is missing, damaged or of another model; the message says which."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    lr: float = 0.1
    batch_size: int = 256
    device: str = "auto"
    data_root: str | None = None
    loader: str = "tensor"  # tensor | dataloader
    workers: int = 4
    model: str = "scratch"  # scratch | concise
    metrics_json: str | None = None
    plot: str | None = None
    checkpoint_dir: str | None = "runs/softmax"
    resume: bool = False
    guard: bool = True
    seed: int = 0
    lr_schedule: str = "anneal"  # anneal: constant, then linearly to 0 over the last epoch
    threads: int | None = None  # CPU intra-op threads; None: 1 for --loader tensor on CPU


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float
    test_acc: float
    seconds: float  # wall time of the epoch: training and evaluation
    train_seconds: float
    samples_per_s: float
    device: str
    peak_memory_bytes: int | None = None  # CUDA only
    syncs_per_step: float | None = None  # CUDA with the guard on only


@dataclass
class TrainResult:
    device: str
    config: TrainConfig
    epochs: list[EpochMetrics] = field(default_factory=list)
    guard: list[EpochGuardReport] = field(default_factory=list)
    checkpoint: str | None = None
    resumed_from_epoch: int = 0


# -- devices ---------------------------------------------------------------------------------
def cuda_device_count() -> int:
    """The one seam for 'how many CUDA devices': tests patch this to fake GPUs."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _doctor_reason(kind: str) -> str | None:
    """Doctor's reason why ``kind`` ("cuda" or "mps") is unusable, or None if it has none."""
    try:
        from devcheck.doctor import device_availability

        reason = getattr(device_availability(live=False), f"{kind}_reason")
        return str(reason) if reason else None
    except Exception:  # doctor absent or broken: callers fall back to torch's own facts
        return None


def cuda_reason() -> str:
    """Why CUDA is not usable, in doctor's words when devcheck.doctor is there."""
    reason = _doctor_reason("cuda")
    if reason:
        return reason
    if torch.version.cuda is None:
        return f"this torch build is CPU-only ({torch.__version__})"
    return (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but finds no "
            f"usable GPU (no NVIDIA driver, or no GPU visible to this process)")


def mps_reason() -> str:
    """Why MPS is not usable, in doctor's words when devcheck.doctor is there."""
    return _doctor_reason("mps") or "MPS (Apple GPU) is not available on this machine"


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a concrete device, or raise DeviceError."""
    text = spec.strip().lower()
    if text == "auto":
        if cuda_device_count() > 0:
            return torch.device("cuda", 0)
        return torch.device("mps") if mps_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {spec!r} is not a device name; expected auto, cpu, cuda, "
                          f"cuda:N or mps") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        count = cuda_device_count()
        if count == 0:
            raise DeviceError(f"--device {spec}: CUDA is not usable here: {cuda_reason()}. "
                              f"Use --device cpu (or auto); `devcheck doctor` shows the fix.")
        index = 0 if device.index is None else device.index
        if index >= count:
            raise DeviceError(
                f"--device {spec}: this machine has {count} visible CUDA device(s) "
                f"(cuda:0..cuda:{count - 1}); expected an index below {count}. Use "
                f"--device cuda:0 (CUDA_VISIBLE_DEVICES renumbers the visible GPUs from 0).")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not mps_available():
            raise DeviceError(f"--device {spec}: MPS is not usable here: {mps_reason()}. "
                              f"Use --device cpu (or auto); `devcheck doctor` shows the fix.")
        return device
    raise DeviceError(f"--device {spec}: device type {device.type!r} is not supported here; "
                      f"expected auto, cpu, cuda, cuda:N or mps")


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


# -- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Temp file + fsync + rename: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """weights_only=True (no pickled code) and map_location: a GPU checkpoint loads on a CPU.

    Anything that is not a complete checkpoint of ours (truncated, another program's pickle,
    code objects) becomes one CheckpointError naming the file, never a traceback."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({_first_line(exc)}); "
                              f"expected a complete file written by `softmax train`. Fix: "
                              f"pass another file, or delete it to start over"
                              ) from None
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        found = (f"keys {sorted(map(str, payload))}" if isinstance(payload, dict)
                 else f"a {type(payload).__name__}")
        raise CheckpointError(f"checkpoint {path} is not a `softmax train` checkpoint: found "
                              f"{found}; expected a dict with keys "
                              f"{', '.join(_CHECKPOINT_KEYS)}. Fix: pass a file written by "
                              f"`softmax train` (runs/softmax/last.pt by default)")
    return payload


def load_model_state(model: Model, payload: dict[str, Any], source: Path | str) -> None:
    """Load the payload's parameters into ``model``, refusing another model's shapes."""
    state = payload["state"]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    seen = ({str(k): tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
             for k, v in state.items()} if isinstance(state, dict) else type(state).__name__)
    if seen != expected:
        raise CheckpointError(f"checkpoint {source} holds a {payload['model']!r} state with "
                              f"{seen}; expected {expected}. Fix: pass a checkpoint written "
                              f"by this version of `softmax train`")
    model.load_state_dict(state)


def model_from_checkpoint(payload: dict[str, Any], device: torch.device,
                          source: Path | str = "checkpoint") -> Model:
    kind = str(payload["model"])
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"checkpoint {source} holds a model of kind {kind!r}; expected "
                              f"one of {', '.join(MODEL_KINDS)}. Fix: pass a file written by "
                              f"`softmax train`")
    model = make_model(kind, device)
    load_model_state(model, payload, source)
    return model


# -- the run ---------------------------------------------------------------------------------
def _loaders(config: TrainConfig, device: torch.device, generator: torch.Generator,
             ) -> tuple[Iterable, Iterable, int, str]:
    root = locate(config.data_root)
    if config.loader == "dataloader":
        cpu_gen = torch.Generator().manual_seed(config.seed)
        book_train, book_test = book_dataloaders(root, config.batch_size, config.workers,
                                                 generator=cpu_gen)
        return book_train, book_test, len(book_train), "the DataLoader"
    data = load_tensors(root, device)
    train_iter = TensorLoader(data.train_images, data.train_labels, config.batch_size,
                              shuffle=True, generator=generator)
    test_iter = TensorLoader(data.test_images, data.test_labels, max(config.batch_size, 1024),
                             shuffle=False)
    return train_iter, test_iter, len(train_iter), "the tensor loader"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def metrics_payload(result: TrainResult) -> dict[str, Any]:
    return {"device": result.device, "settings": asdict(result.config),
            "resumed_from_epoch": result.resumed_from_epoch,
            "epochs": [asdict(m) for m in result.epochs],
            "guard": [asdict(r) for r in result.guard]}


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Scope torch's intra-op thread count to the run, restoring it after.

    Why 1 by default for the tensor loader on CPU: its matmuls are tiny (256x784x10), so a
    second thread buys little, and when another process takes a core the OpenMP threads
    spin-wait on each other: on the 2-core reference machine epochs then jumped from 65 ms
    to over a second. One thread runs at the same speed and never stalls that way.
    """
    previous = torch.get_num_threads()
    if n is not None and n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_ch3(config: TrainConfig, *, on_epoch: Callable[[EpochMetrics], None] | None = None,
              log: Callable[[str], None] = print, progress: bool | None = None) -> TrainResult:
    """Train for ``config.epochs`` (resuming if asked); raise the module's errors, never exit."""
    device = resolve_device(config.device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = make_model(config.model, device, torch.Generator().manual_seed(config.seed),
                       config.lr)
    result = TrainResult(device=str(device), config=config)
    ckpt_path = Path(config.checkpoint_dir) / CHECKPOINT_NAME if config.checkpoint_dir else None
    start = 1
    if ckpt_path is not None and ckpt_path.parent.is_dir():
        for stale in ckpt_path.parent.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # from a killed run
            stale.unlink(missing_ok=True)
    if config.resume and ckpt_path is not None and ckpt_path.exists():
        payload = load_checkpoint(ckpt_path, device)
        if payload["model"] != config.model:
            raise CheckpointError(f"{ckpt_path} holds a {payload['model']!r} model; expected "
                                  f"{config.model!r}. Use --model {payload['model']} or another "
                                  f"--checkpoint-dir.")
        load_model_state(model, payload, ckpt_path)
        model.load_extra_state(payload.get("extra", {}))
        if payload.get("device_type") == device.type:
            generator.set_state(payload["generator"].cpu())  # map_location moved it
        result.epochs = [EpochMetrics(**m) for m in payload.get("history", [])]
        start = result.resumed_from_epoch = int(payload["epoch"]) + 1
        log(f"resumed from {ckpt_path} after epoch {payload['epoch']}")
    elif config.resume:
        log(f"--resume: no checkpoint at {ckpt_path}; starting from epoch 1")
    train_iter, test_iter, steps, source = _loaders(config, device, generator)
    guard = StepGuard(device, num_classes=NUM_CLASSES, source=source) if config.guard else None
    threads = config.threads
    if threads is None and device.type == "cpu" and config.loader == "tensor":
        threads = 1
    with cpu_threads(threads):
        _epochs(config, model, device, generator, train_iter, test_iter, steps, guard,
                result, ckpt_path, start, on_epoch, log, progress)
    return result


def _epochs(config: TrainConfig, model: Model, device: torch.device,
            generator: torch.Generator, train_iter: Iterable, test_iter: Iterable, steps: int,
            guard: StepGuard | None, result: TrainResult, ckpt_path: Path | None, start: int,
            on_epoch: Callable[[EpochMetrics], None] | None, log: Callable[[str], None],
            progress: bool | None) -> None:
    from tqdm.auto import tqdm

    for epoch in range(start, config.epochs + 1):
        metrics = _run_epoch(epoch, model, config, device, train_iter, test_iter, steps, guard,
                             tqdm, progress)
        result.epochs.append(metrics)
        if guard is not None:
            result.guard = list(guard.reports)
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                "format": 1, "epoch": epoch, "model": config.model, "state": model.state_dict(),
                "extra": model.extra_state(), "device_type": device.type,
                "generator": generator.get_state(), "settings": asdict(config),
                "history": [asdict(m) for m in result.epochs]})
            result.checkpoint = str(ckpt_path)
        if config.metrics_json:
            _write_json(Path(config.metrics_json), metrics_payload(result))
        log(format_epoch(metrics, config.epochs))
        if on_epoch is not None:
            on_epoch(metrics)


def lr_for_epoch(config: TrainConfig, epoch: int, steps: int,
                 ) -> float | Callable[[int], float]:
    """The book's constant rate; with "anneal", the final epoch decays it linearly to ~0.

    Why: at lr 0.1 the last iterate of plain SGD wanders, so the final test accuracy varies
    by about +-0.01 with the shuffling seed (0.808-0.834 over seeds 0-6); annealing only the
    last epoch removes that spread (0.834-0.836) without changing the first nine epochs.
    """
    if config.lr_schedule == "constant" or epoch != config.epochs:
        return config.lr
    if config.lr_schedule != "anneal":
        raise ValueError(f"lr schedule {config.lr_schedule!r}: expected anneal or constant")
    return lambda step: config.lr * (steps - step) / steps


def _run_epoch(epoch: int, model: Model, config: TrainConfig, device: torch.device,
               train_iter: Iterable, test_iter: Iterable, steps: int, guard: StepGuard | None,
               tqdm: Any, progress: bool | None) -> EpochMetrics:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = tqdm(total=steps, desc=f"epoch {epoch}/{config.epochs}", leave=False,
               disable=(not progress) if progress is not None else None)
    lr = lr_for_epoch(config, epoch, steps)
    t0 = time.perf_counter()
    try:
        if guard is not None:
            with guard.epoch(epoch):
                loss, acc, seen = train_epoch_ch3(model, train_iter, lr, device, guard, bar)
        else:
            loss, acc, seen = train_epoch_ch3(model, train_iter, lr, device, None, bar)
    finally:
        bar.close()
    if not math.isfinite(loss):  # the guard names the step; without it, the epoch will do
        raise NonFiniteLossError(epoch, None, f"the loss became non-finite (nan/inf) in epoch "
                                 f"{epoch} (run without --no-guard to find the step). Fix: "
                                 f"lower the learning rate (--lr).")
    t_train = time.perf_counter() - t0
    test_acc = evaluate_accuracy(model, test_iter, device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    syncs = guard.reports[-1].syncs_per_step if guard is not None and guard.reports else None
    return EpochMetrics(epoch, loss, acc, test_acc, seconds, t_train, seen / t_train,
                        str(device), peak, syncs)


def format_epoch(m: EpochMetrics, epochs: int) -> str:
    text = (f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f}  train acc "
            f"{m.train_acc:.4f}  test acc {m.test_acc:.4f}  {m.seconds:.3f} s  "
            f"{m.samples_per_s:,.0f} samples/s  {m.device}")
    if m.peak_memory_bytes is not None:
        text += f"  peak mem {m.peak_memory_bytes / 2**20:.1f} MiB"
    if m.syncs_per_step is not None:
        text += f"  syncs/step {m.syncs_per_step:.2f}"
    return text


__all__ = ["Accumulator", "CheckpointError", "DeviceError", "EpochMetrics", "TrainConfig",
           "TrainResult", "evaluate_accuracy", "load_checkpoint", "model_from_checkpoint",
           "resolve_device", "save_checkpoint", "train_ch3", "train_epoch_ch3"]
