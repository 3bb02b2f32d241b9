"""The book's ``predict_ch3``, fixed: the images go to the model's device, the picture to a PNG.

The learner's version fed CPU test images to a GPU model (mixed-device error); here the
checkpoint is loaded with ``map_location`` onto the chosen device, the images are moved to
that same device, and only the drawing copies them back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from softmax.data import CLASSES, load_tensors, locate
from softmax.train import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    resolve_device,
)


@dataclass(frozen=True)
class Prediction:
    path: Path
    n: int
    wrong: int
    device: str


def predict_ch3(checkpoint: Path, device_spec: str, data_root: str | None, n: int,
                out: Path) -> Prediction:
    from softmax.plot import prediction_grid

    device = resolve_device(device_spec)
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist; expected a file written "
                              f"by `softmax train` (default runs/softmax/last.pt); train first "
                              f"or pass --checkpoint")
    model = model_from_checkpoint(load_checkpoint(checkpoint, device), device, checkpoint)
    data = load_tensors(locate(data_root), device)
    images, labels = data.test_images[:n], data.test_labels[:n]
    with torch.no_grad():
        preds = model.logits(images.to(torch.float32) / 255).argmax(dim=1)
    labels_host, preds_host = labels.tolist(), preds.tolist()  # one copy back, for drawing
    wrong = sum(a != b for a, b in zip(labels_host, preds_host, strict=True))
    path = prediction_grid(images, labels_host, preds_host, CLASSES, out)
    return Prediction(path, len(labels_host), wrong, str(device))
