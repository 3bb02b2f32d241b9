"""The book's chapter 3.6 code, made device-correct: what ``softmax train --book`` runs.

Put this file next to d2l's "Implementation of Softmax Regression from Scratch": the names,
the order and the maths are the book's (``get_dataloader_workers``, ``load_data_fashion_mnist``
with ``ToTensor`` and a shuffled ``DataLoader``, ``W`` of shape (784, 10) drawn with
``torch.normal(0, 0.01)``, ``b`` zeros, the naive ``softmax``, ``net``, ``cross_entropy``,
``accuracy``, ``Accumulator(n)``, ``evaluate_accuracy``, ``train_epoch_ch3``, ``train_ch3``,
``sgd`` as the ``updater``, autograd's ``backward()``, a constant learning rate). What is
changed, each marked ``# device:`` or ``# sync:`` where it happens, and why:

- one explicit ``device`` everywhere (never ``torch.set_default_device``): ``W`` and ``b``
  are created with ``device=device``, and every batch is moved with ``.to(device)`` (pinned
  and non-blocking on CUDA, so the copy does not make the host wait);
- metrics stay on the device: ``accuracy`` returns a tensor, and ``Accumulator`` adds on the
  device and reads its numbers back once, when asked (the book's ``float(...)`` per batch
  makes a GPU wait for the host at every step);
- ``cross_entropy`` indexes rows with ``torch.arange(..., device=)`` instead of a Python
  ``range`` (which would be copied from the host at every step);
- devcheck's ``StepGuard`` checks batch, labels, ``W``, ``b``, outputs and loss each step
  from metadata only, and the loss's finiteness once per epoch;
- ``get_dataloader_workers`` follows the CPUs this process may use (the book's fixed 4 makes
  torch warn on a 2-core machine);
- ``train_ch3`` returns the history instead of animating it (the command line draws a PNG;
  a notebook can pass ``on_epoch``), and has no asserts: they are the book's tests.

softmax.book_run runs it as ``softmax train --book`` (settings, checkpoint, metrics JSON).
The fast path (``softmax train`` without ``--book``, ``softmax.train``) is another design:
dataset resident on the device, a hand-written gradient, ``W`` stored transposed; see
docs/softmax.md for the two side by side with their measured speed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils import data

from devcheck.guard import NonFiniteLossError, StepGuard
from softmax.data import NUM_CLASSES, NUM_INPUTS, check_labels, default_workers

Net = Callable[[torch.Tensor], torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# -- 3.5: reading the dataset ------------------------------------------------------------
def get_dataloader_workers() -> int:
    """The book returns 4; here: at most 4, and never more than the CPUs we may use."""
    return default_workers()


def load_data_fashion_mnist(batch_size: int, root: str | Path, device: torch.device,
                            workers: int | None = None,
                            generator: torch.Generator | None = None,
                            ) -> tuple[data.DataLoader, data.DataLoader]:
    """The book's loader (torchvision + ``ToTensor`` + ``DataLoader``); batches stay on the CPU.

    ``root`` is a prepared dataset root (``softmax.data.locate``): never a download here.
    ``generator`` is a CPU generator: the sampler shuffles on the host, whatever ``device`` is.
    """
    import torchvision
    from torchvision import transforms

    trans = transforms.ToTensor()
    mnist_train = torchvision.datasets.FashionMNIST(root=str(root), train=True,
                                                    transform=trans, download=False)
    mnist_test = torchvision.datasets.FashionMNIST(root=str(root), train=False,
                                                   transform=trans, download=False)
    check_labels(mnist_train.targets, Path(root), True)
    check_labels(mnist_test.targets, Path(root), False)
    workers = get_dataloader_workers() if workers is None else workers
    pin = device.type == "cuda"  # device: pinned pages make .to(device, non_blocking) async
    return (data.DataLoader(mnist_train, batch_size, shuffle=True, generator=generator,
                            num_workers=workers, pin_memory=pin,
                            persistent_workers=workers > 0),
            data.DataLoader(mnist_test, batch_size, shuffle=False, num_workers=workers,
                            pin_memory=pin, persistent_workers=workers > 0))


# -- 3.6.1: initializing the model parameters --------------------------------------------
def init_params(device: torch.device, generator: torch.Generator | None = None,
                num_inputs: int = NUM_INPUTS, num_outputs: int = NUM_CLASSES,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``W`` (784, 10) ~ N(0, 0.01) and ``b`` zeros, both created on ``device``.

    device: ``torch.normal`` ignores ``torch.set_default_device`` (it is not one of the
    factories the default-device mode rewrites), so ``device=`` is the only reliable way.
    ``generator`` (a CPU one, for the same weights on every device) draws on the CPU."""
    if generator is not None and generator.device != device:
        W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), generator=generator,
                         device=generator.device).to(device).requires_grad_()
    else:
        W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), generator=generator,
                         device=device, requires_grad=True)
    b = torch.zeros(num_outputs, device=device, requires_grad=True)
    return W, b


# -- 3.6.2 - 3.6.5: the softmax operation, the model, the loss, accuracy -------------------
def softmax(X: torch.Tensor) -> torch.Tensor:
    """The book's softmax, as written: ``exp`` overflows past ~88 (the guard then stops the
    run naming the step); softmax.model.softmax is the stable one the fast path uses."""
    X_exp = torch.exp(X)
    partition = X_exp.sum(1, keepdim=True)
    return X_exp / partition  # the book's form  # devcheck: ignore[unstable_softmax]


def make_net(W: torch.Tensor, b: torch.Tensor) -> Net:
    """The book's ``net(X)`` over ``W`` and ``b`` (globals in the book, captured here)."""

    def net(X: torch.Tensor) -> torch.Tensor:
        return softmax(torch.matmul(X.reshape((-1, W.shape[0])), W) + b)

    return net


def cross_entropy(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``-log(y_hat[range(n), y])``; sync: the row index is made on the device, not the host."""
    return -torch.log(y_hat[torch.arange(len(y_hat), device=y_hat.device), y])


def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions, as a tensor on the device (sync: no ``float()``)."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return cmp.type(y.dtype).sum()


class Accumulator:
    """The book's ``Accumulator(n)``: sums over ``n`` variables, kept on ``device``.

    sync: ``add`` is a device-side addition (tensors or plain numbers); the first
    ``acc[i]`` after an ``add`` reads all ``n`` sums to the host in one transfer."""

    def __init__(self, n: int, device: torch.device | str = "cpu") -> None:
        device = torch.device(device)
        wide = torch.float32 if device.type == "mps" else torch.float64  # MPS: no float64
        self.data = torch.zeros(n, dtype=wide, device=device)
        self._host: list[float] | None = None

    def add(self, *args: torch.Tensor | float) -> None:
        if len(args) != len(self.data):
            raise ValueError(f"Accumulator.add got {len(args)} values; expected "
                             f"{len(self.data)} (one per variable)")
        for i, a in enumerate(args):
            self.data[i] += a
        self._host = None

    def reset(self) -> None:
        self.data.zero_()
        self._host = None

    def __getitem__(self, idx: int) -> float:
        if self._host is None:
            self._host = self.data.tolist()  # the one host read
        return self._host[idx]


def to_device(X: torch.Tensor, y: torch.Tensor, device: torch.device,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """device: every batch moved (``Tensor.to`` returns a new tensor: assign it)."""
    non_blocking = device.type == "cuda"
    return X.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)


def evaluate_accuracy(net: Net | torch.nn.Module, data_iter: Iterable,
                      device: torch.device) -> float:
    """Accuracy of ``net`` on ``data_iter``; one host read at the end."""
    if isinstance(net, torch.nn.Module):
        net.eval()
    metric = Accumulator(2, device)  # correct predictions, number of predictions
    with torch.no_grad():
        for X, y in data_iter:
            X, y = to_device(X, y, device)
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


# -- 3.6.6: training ---------------------------------------------------------------------
def sgd(params: Sequence[torch.Tensor], lr: float, batch_size: int) -> None:
    """Minibatch stochastic gradient descent (the book's ``d2l.sgd``)."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


Updater = Callable[[int], None] | torch.optim.Optimizer


def train_epoch_ch3(net: Net | torch.nn.Module, train_iter: Iterable, loss: Loss,
                    updater: Updater, device: torch.device, guard: StepGuard | None = None,
                    params: Sequence[tuple[str, torch.Tensor]] = (),
                    progress: Any = None) -> tuple[float, float]:
    """One epoch; returns (mean loss, accuracy), read from the device once."""
    if isinstance(net, torch.nn.Module):
        net.train()
    metric = Accumulator(3, device)  # sum of losses, correct predictions, examples
    for X, y in train_iter:
        X, y = to_device(X, y, device)  # device: the book's code has no such line
        if guard is not None:
            guard.check_inputs(X, y, params)
        y_hat = net(X)
        l = loss(y_hat, y)  # noqa: E741 - the book's name
        if guard is not None:
            guard.check_outputs(y_hat, l)
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.mean().backward()
            updater.step()
        else:
            l.sum().backward()
            updater(X.shape[0])
        metric.add(l.detach().sum(), accuracy(y_hat, y), y.numel())  # sync: no float()
        if progress is not None:
            progress.update(1)
    return metric[0] / metric[2], metric[1] / metric[2]


@dataclass(frozen=True)
class BookEpoch:
    """One epoch's figures, as ``train_ch3`` reports them (seconds include evaluation)."""

    epoch: int
    train_loss: float
    train_acc: float
    test_acc: float
    seconds: float
    train_seconds: float
    samples_per_s: float
    device: str
    syncs_per_step: float | None = None  # CUDA with the guard on only


def train_ch3(net: Net | torch.nn.Module, train_iter: data.DataLoader, test_iter: Iterable,
              loss: Loss, num_epochs: int, updater: Updater, device: torch.device, *,
              guard: StepGuard | None = None, params: Sequence[tuple[str, torch.Tensor]] = (),
              on_epoch: Callable[[BookEpoch], None] | None = None,
              progress: bool | None = None) -> list[BookEpoch]:
    """Train for ``num_epochs``; ``on_epoch`` replaces the book's Animator."""
    history: list[BookEpoch] = []
    tqdm = progress_bar_class()
    for epoch in range(1, num_epochs + 1):
        bar = tqdm(total=len(train_iter), desc=f"epoch {epoch}/{num_epochs}", leave=False,
                   disable=(not progress) if progress is not None else None)
        t0 = time.perf_counter()
        try:
            if guard is not None:
                with guard.epoch(epoch):
                    train_metrics = train_epoch_ch3(net, train_iter, loss, updater, device,
                                                    guard, params, bar)
            else:
                train_metrics = train_epoch_ch3(net, train_iter, loss, updater, device,
                                                None, params, bar)
        finally:
            bar.close()
        t_train = time.perf_counter() - t0
        if not math.isfinite(train_metrics[0]):  # the guard names the step; this the epoch
            raise NonFiniteLossError(epoch, None, (
                f"the loss became non-finite (nan/inf) in epoch {epoch}; expected a finite "
                f"loss. Fix: lower the learning rate (--lr), or run with the guard on to "
                f"find the step"))
        test_acc = evaluate_accuracy(net, test_iter, device)
        seconds = time.perf_counter() - t0
        seen = len(train_iter.dataset) if hasattr(train_iter, "dataset") else 0
        syncs = guard.reports[-1].syncs_per_step if guard is not None and guard.reports else None
        record = BookEpoch(epoch, train_metrics[0], train_metrics[1], test_acc, seconds,
                           t_train, seen / t_train if t_train > 0 else 0.0, str(device), syncs)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history


def progress_bar_class() -> Any:
    """tqdm's notebook bar only when ipywidgets is there, else the plain one.

    Why: ``tqdm.auto`` picks the notebook bar inside Jupyter, and without ipywidgets that
    prints ``TqdmWarning: IProgress not found`` on stderr at every bar."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        from tqdm import tqdm
        return tqdm
    from tqdm.auto import tqdm as auto_tqdm
    return auto_tqdm


__all__ = ["Accumulator", "BookEpoch", "accuracy", "cross_entropy", "evaluate_accuracy",
           "get_dataloader_workers", "init_params", "load_data_fashion_mnist", "make_net",
           "progress_bar_class", "sgd", "softmax", "train_ch3", "train_epoch_ch3"]
