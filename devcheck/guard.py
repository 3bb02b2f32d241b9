"""A placement guard for any training loop: is every tensor where it should be, at every step?

Usage (any loop)::

    guard = StepGuard(device, num_classes=10, source="the DataLoader")
    for epoch in range(1, epochs + 1):
        with guard.epoch(epoch):
            for X, y in loader:
                guard.check_inputs(X, y, params=model.parameters())
                y_hat = model(X); loss = loss_fn(y_hat, y)
                guard.check_outputs(y_hat, loss)
                ...

Why it costs (almost) nothing: placement and dtype checks read ``.device`` and ``.dtype``,
which are host-side metadata. Finiteness and label range need the *values*, and asking for a
value (``.item()``, ``if loss.isnan()``) makes the host wait for the device at every step, the
very slowdown the guard should expose. So the guard only keeps references to the step's loss
and labels; every ``flush_every`` steps it reduces them on the device into a "first bad step"
tensor, and reads that once, when the epoch ends. A non-finite loss therefore stops the run at
the end of the epoch it happened in, naming the epoch and the step.

On CUDA the guard also counts host-device synchronisations inside the epoch, using torch's
sync debug mode ('warn'), and reports them per step.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

_SYNC_WARNING = "called a synchronizing CUDA operation"
_NO_STEP = 2**62


class PlacementError(RuntimeError):
    """A tensor is on the wrong device or has the wrong dtype; the message says the fix."""


class NonFiniteLossError(RuntimeError):
    def __init__(self, epoch: int, step: int | None, message: str) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


class LabelRangeError(RuntimeError):
    pass


@dataclass(frozen=True)
class EpochGuardReport:
    epoch: int
    steps: int
    syncs: int | None  # host-device synchronisations counted in the epoch; None off CUDA
    syncs_per_step: float | None


def _convert_hint(seen: torch.dtype, expected: torch.dtype, device: torch.device) -> str:
    """The fix for a batch of the wrong dtype, fitted to what was seen.

    Only integer pixels (0..255) need ``/ 255``; a float batch (float64 from numpy, float16,
    bfloat16) is already scaled the way it was produced, and dividing it again would shrink
    it 255-fold. Read from the dtype alone: looking at the values would cost a host sync."""
    name = str(expected).removeprefix("torch.")
    if seen.is_floating_point or seen.is_complex:
        return (f"convert it with X = X.to({str(device)!r}, torch.{name}) (a float batch is "
                f"already scaled; do not divide it by 255 again).")
    if seen == torch.bool:
        return f"convert it with X = X.to({str(device)!r}, torch.{name})."
    return (f"convert it with X = X.to({str(device)!r}, torch.{name}) / 255 (integer pixels "
            f"0..255 to [0, 1], as ToTensor does).")


def same_device(seen: torch.device, expected: torch.device) -> bool:
    """``cuda`` (no index) matches any ``cuda:N``; otherwise type and index must agree."""
    return seen.type == expected.type and (
        expected.index is None or seen.index == expected.index)


class StepGuard:
    """Checks one step's tensors; see the module docstring for the no-sync design."""

    def __init__(self, device: torch.device | str, *, num_classes: int | None = None,
                 dtype: torch.dtype = torch.float32, label_dtype: torch.dtype = torch.int64,
                 source: str = "the data loader", flush_every: int = 256,
                 count_syncs: bool = True) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.num_classes, self.dtype, self.label_dtype = num_classes, dtype, label_dtype
        self.source, self.flush_every = source, flush_every
        self.count_syncs = count_syncs and self.device.type == "cuda"
        self.reports: list[EpochGuardReport] = []
        self._reset()

    # -- placement: metadata only -------------------------------------------------------
    def _expect(self, role: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...],
                fix: str) -> None:
        if not same_device(t.device, self.device) or t.dtype not in dtypes:
            want = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
            seen_dtype = str(t.dtype).removeprefix("torch.")
            raise PlacementError(
                f"{role} is on {t.device} with dtype {seen_dtype}; expected {self.device} with "
                f"dtype {want}. Fix: {fix}")

    def _on_device(self, t: torch.Tensor) -> bool:
        d = t.device
        return d == self.device or same_device(d, self.device)  # fast path first

    def check_inputs(self, X: torch.Tensor, y: torch.Tensor,
                     params: Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]] = (),
                     ) -> None:
        """Check the batch, the labels and the parameters; remember the labels for the range
        check. Call before the forward pass, so a misplaced tensor is named before torch
        fails with a generic mixed-device error."""
        dev = self.device
        if not self._on_device(X):
            raise PlacementError(
                f"X came from {self.source} on {X.device}; expected {dev}. Fix: move it with "
                f"X = X.to({str(dev)!r}) (Tensor.to returns a new tensor: assign it).")
        if X.dtype is not self.dtype and X.dtype is not torch.uint8:
            self._expect("X (the batch)", X, (self.dtype, torch.uint8),
                         _convert_hint(X.dtype, self.dtype, dev))
        if not self._on_device(y):
            raise PlacementError(
                f"y (the labels) came from {self.source} on {y.device}; expected {dev}. Fix: "
                f"move it with y = y.to({str(dev)!r}).")
        if y.dtype is not self.label_dtype:
            self._expect("y (the labels)", y, (self.label_dtype,),
                         "class indices must be int64: y = y.long().")
        for i, p in enumerate(params):
            name, t = p if isinstance(p, tuple) else (f"parameter {i}", p)
            if t.dtype is not self.dtype or not self._on_device(t):
                self._expect(f"parameter {name}", t, (self.dtype,),
                             f"create it on the device (torch.zeros(..., device={str(dev)!r})) "
                             f"or move the model with model.to({str(dev)!r}) before building "
                             f"the optimizer.")
        if self.num_classes is not None:
            self._labels.append(y)

    def check_outputs(self, y_hat: torch.Tensor, loss: torch.Tensor) -> None:
        """Check the model's outputs and the loss; remember the loss for the finiteness check."""
        if y_hat.dtype is not self.dtype or not self._on_device(y_hat):
            self._expect("y_hat (the model's output)", y_hat, (self.dtype,),
                         "the model computed somewhere else: put its parameters and the batch "
                         "on one device.")
        if loss.dtype is not self.dtype or not self._on_device(loss):
            self._expect("loss", loss, (self.dtype,),
                         "compute the loss from y_hat and y on the training device.")
        self._losses.append(loss.detach())
        self._step += 1
        if len(self._losses) >= self.flush_every:
            self._flush()

    def check(self, X: torch.Tensor, y: torch.Tensor, params: Iterable[torch.Tensor],
              y_hat: torch.Tensor, loss: torch.Tensor) -> None:
        self.check_inputs(X, y, params)
        self.check_outputs(y_hat, loss)

    # -- values: reduced on the device, read once per epoch --------------------------------
    def _reset(self) -> None:
        self._step = 0
        self._losses: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._flush_sizes: list[list[int]] = []  # host-side: elements per step, per flush
        self._first_bad: list[torch.Tensor] = []  # device-side: first bad element per flush
        self._label_min: torch.Tensor | None = None
        self._label_max: torch.Tensor | None = None

    def _flush(self) -> None:
        """A handful of device kernels per ``flush_every`` steps; nothing is read back."""
        if self._losses:
            flat = torch.cat([t.reshape(-1) for t in self._losses])
            positions = torch.arange(flat.numel(), device=flat.device)
            self._first_bad.append(torch.where(torch.isfinite(flat), _NO_STEP, positions).min())
            self._flush_sizes.append([t.numel() for t in self._losses])
            self._losses = []
        if self._labels:
            lo, hi = torch.aminmax(torch.cat([y.reshape(-1) for y in self._labels]))
            self._label_min = lo if self._label_min is None else torch.minimum(
                self._label_min, lo)
            self._label_max = hi if self._label_max is None else torch.maximum(
                self._label_max, hi)
            self._labels = []

    def _bad_step(self, positions: list[int]) -> int | None:
        """Map 'first bad element of flush k' back to a 1-based step number, on the host."""
        step = 0
        for position, sizes in zip(positions, self._flush_sizes, strict=True):
            if position != _NO_STEP:
                for size in sizes:
                    step += 1
                    position -= size
                    if position < 0:
                        return step
            step += len(sizes)
        return None

    def _verdict(self, epoch: int) -> None:
        """The epoch's one host sync: read first-bad positions and label range together."""
        self._flush()
        parts = [t.reshape(1).to(torch.int64) for t in self._first_bad]
        if self._label_min is not None and self._label_max is not None:
            parts += [self._label_min.reshape(1).long(), self._label_max.reshape(1).long()]
        if not parts:
            return
        values = torch.cat(parts).tolist()
        positions = values[:len(self._first_bad)]
        if self._label_min is not None and self.num_classes is not None:
            lo, hi = values[len(self._first_bad):]
            if lo < 0 or hi >= self.num_classes:
                raise LabelRangeError(
                    f"labels in epoch {epoch} range over [{lo}, {hi}]; expected class indices "
                    f"in [0, {self.num_classes - 1}]. Fix: check the dataset's labels and "
                    f"num_classes (on CUDA this shows up as 'device-side assert triggered').")
        bad_step = self._bad_step(positions)
        if bad_step is not None:
            raise NonFiniteLossError(
                epoch, bad_step,
                f"the loss became non-finite (nan/inf) at epoch {epoch}, step {bad_step}. "
                f"Fix: lower the learning rate (--lr), and check inputs are scaled to [0, 1] "
                f"and the softmax/cross-entropy is computed stably from logits.")

    @contextmanager
    def epoch(self, epoch: int) -> Iterator[None]:
        """Wrap one epoch's training steps (not the evaluation): sync counting and verdict."""
        self._reset()
        caught: list[warnings.WarningMessage] = []
        if self.count_syncs:
            previous = torch.cuda.get_sync_debug_mode()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    yield
                finally:
                    torch.cuda.set_sync_debug_mode(previous)
        else:
            yield
        syncs = None
        if self.count_syncs:
            syncs = sum(_SYNC_WARNING in str(w.message) for w in caught)
            for w in caught:  # other warnings were only borrowed: hand them back
                if _SYNC_WARNING not in str(w.message):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.reports.append(EpochGuardReport(
            epoch, self._step, syncs,
            None if syncs is None else syncs / max(self._step, 1)))
        self._verdict(epoch)
