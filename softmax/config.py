"""``TrainConfig``: every setting of a run, checked when it is built, before any work.

Why on construction: a bad value found late costs a whole run (``lr_schedule="bogus"`` used
to train every epoch but the last, then fail), or is silently replaced (an unknown
``loader`` became ``tensor``). Each check raises :class:`ConfigError`, one line naming the
field, the value seen and the values expected; the CLI shows it under the option's name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from softmax.devices import cpu_count
from softmax.limits import EPOCHS_MAX, LR_MAX

LOADERS = ("tensor", "dataloader")
MODELS = ("scratch", "concise")
LR_SCHEDULES = ("anneal", "constant")
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts


class ConfigError(ValueError):
    """A setting is out of range; ``option_message()`` words it for the command line."""

    def __init__(self, name: str, value: object, expected: str, fix: str = "",
                 seen: str = "") -> None:
        self.name, self.value, self.expected, self.fix, self.seen = (
            name, value, expected, fix, seen)
        super().__init__(self._text(f"TrainConfig.{name} = {value!r}"))

    def _text(self, subject: str) -> str:
        return (f"{subject}: {self.seen + '; ' if self.seen else ''}expected {self.expected}"
                + (f". Fix: {self.fix}" if self.fix else ""))

    def option_message(self) -> str:
        value = self.value
        shown = repr(value) if isinstance(value, str) and (not value.strip()
                                                           or value.strip() != value) else value
        return self._text(f"--{self.name.replace('_', '-')} {shown}")


def max_workers() -> int:
    """DataLoader workers allowed: 4 per CPU (at least 8). Each worker is a process holding
    a copy of the dataset's state; thousands of them exhaust the machine long before the
    first batch, which is not a useful way to learn the option was mistyped."""
    return max(8, 4 * cpu_count())


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real_path(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    lr: float = 0.1
    batch_size: int = 256
    device: str = "auto"
    data_root: str | None = None
    loader: str = "tensor"  # tensor | dataloader
    workers: int | None = 4  # None: softmax.data's default for this machine
    model: str = "scratch"  # scratch | concise
    metrics_json: str | None = None
    plot: str | None = None  # None: <checkpoint_dir>/curves.png when there is a folder
    checkpoint_dir: str | None = "runs/softmax"
    resume: bool = False
    guard: bool = True
    seed: int = 0
    lr_schedule: str = "anneal"  # anneal: constant, then linearly to 0 over the last epoch
    threads: int | None = None  # CPU intra-op threads; None: 1 for --loader tensor on CPU

    def __post_init__(self) -> None:
        self._check_numbers()
        for name, choices in (("loader", LOADERS), ("model", MODELS),
                              ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in choices:
                raise ConfigError(name, getattr(self, name), f"one of {', '.join(choices)}")
        if not isinstance(self.device, str) or not self.device.strip():
            raise ConfigError("device", self.device, "auto, cpu, cuda, cuda:N or mps")
        for name in ("data_root", "metrics_json", "plot", "checkpoint_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(name, value, "a non-empty path (leave the option out for "
                                  "its default)")
        if self.plot is not None:
            from softmax.plot import image_format

            try:
                image_format(self.plot, "--plot")
            except ValueError as exc:  # "--plot X: <what is wrong>; expected <formats>"
                seen, _, expected = str(exc).split(": ", 1)[-1].partition("; expected ")
                raise ConfigError("plot", self.plot, expected, seen=seen) from None
        self._check_outputs_differ()

    def _check_numbers(self) -> None:
        if not _is_int(self.epochs) or not 1 <= self.epochs <= EPOCHS_MAX:
            raise ConfigError("epochs", self.epochs, f"a whole number in 1..{EPOCHS_MAX}")
        if not isinstance(self.lr, int | float) or isinstance(self.lr, bool) \
                or not math.isfinite(self.lr) or not 0 < self.lr <= LR_MAX:
            raise ConfigError("lr", self.lr, "a finite number > 0 and <= 3.4e38 (float32's "
                              "largest; the book uses 0.1)")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError("batch_size", self.batch_size, "a whole number >= 1")
        if self.workers is not None and (not _is_int(self.workers)
                                         or not 0 <= self.workers <= max_workers()):
            raise ConfigError("workers", self.workers,
                              f"0..{max_workers()} (4 per CPU of this machine, at least 8)")
        if not _is_int(self.seed) or not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ConfigError("seed", self.seed, "a whole number in [-2**63, 2**64 - 1]")
        cpus = cpu_count()
        if self.threads is not None and (not _is_int(self.threads)
                                         or not 1 <= self.threads <= cpus):
            raise ConfigError("threads", self.threads,
                              f"1..{cpus} (the CPUs this process may use), or the default",
                              f"pass --threads {cpus} or less")

    @property
    def checkpoint_path(self) -> Path | None:
        from softmax.checkpoint import CHECKPOINT_NAME

        return Path(self.checkpoint_dir) / CHECKPOINT_NAME if self.checkpoint_dir else None

    @property
    def plot_path(self) -> Path | None:
        if self.plot:
            return Path(self.plot)
        return Path(self.checkpoint_dir) / "curves.png" if self.checkpoint_dir else None

    def _check_outputs_differ(self) -> None:
        """The checkpoint, its lock, the metrics file and the plot must be four files: one
        written over another (``--metrics-json runs/softmax/last.pt``) destroys it each epoch
        while the run still reports it."""
        from softmax.checkpoint import LOCK_NAME

        ck = self.checkpoint_path
        taken: dict[str, str] = {}
        if ck is not None:
            taken[_real_path(str(ck))] = f"the checkpoint (--checkpoint-dir {self.checkpoint_dir})"
            taken[_real_path(str(ck.parent / LOCK_NAME))] = "the checkpoint folder's lock file"
        for name in ("metrics_json", "plot"):
            value = getattr(self, name) if name == "metrics_json" else self.plot_path
            if value is None:
                continue
            option = "--" + name.replace("_", "-")
            default = " (the default, <checkpoint-dir>/curves.png)" \
                if name == "plot" and self.plot is None else ""
            real = _real_path(str(value))
            if real in taken:
                raise ConfigError(name, f"{value}{default}", f"a path other than "
                                  f"{taken[real]}; the checkpoint, --metrics-json and --plot "
                                  f"must all differ", f"pass another {option}")
            taken[real] = f"{option} {value}"
