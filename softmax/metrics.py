"""What a run records and reports: each epoch's figures, the result, the metrics JSON.

Kept apart from the loop (softmax.train) so readers of the loop see the maths and the
order of a run, and tools that only read results (the metrics file, ``--watch``, the
distributed reduction) need not import the loop.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devcheck.fileio import atomic_write_text
from devcheck.guard import EpochGuardReport
from softmax.config import TrainConfig


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
    # softmax train --watch: each epoch's GPU figures (devcheck.run.epochs.EpochWatch)
    watch: list[dict[str, Any]] = field(default_factory=list)


def metrics_payload(result: TrainResult) -> dict[str, Any]:
    return {"device": result.device, "settings": asdict(result.config),
            "resumed_from_epoch": result.resumed_from_epoch,
            "epochs": [asdict(m) for m in result.epochs],
            "guard": [asdict(r) for r in result.guard],
            **({"watch": result.watch} if result.watch else {})}


def write_metrics(path: Path, result: TrainResult) -> None:
    """Rewritten after every epoch, atomically: a stopped run leaves the epochs it finished."""
    atomic_write_text(path, json.dumps(metrics_payload(result), indent=2) + "\n",
                      "metrics JSON")


def format_epoch(m: EpochMetrics, epochs: int) -> str:
    text = (f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f}  train acc "
            f"{m.train_acc:.4f}  test acc {m.test_acc:.4f}  {m.seconds:.3f} s  "
            f"{m.samples_per_s:,.0f} samples/s  {m.device}")
    if m.peak_memory_bytes is not None:
        text += f"  peak mem {m.peak_memory_bytes / 2**20:.1f} MiB"
    if m.syncs_per_step is not None:
        text += f"  syncs/step {m.syncs_per_step:.2f}"
    return text


__all__ = ["EpochMetrics", "TrainResult", "format_epoch", "metrics_payload", "write_metrics"]
