"""The book's ``predict_ch3``, fixed: the images go to the model's device, the picture to files.

The learner's version fed CPU test images to a GPU model (mixed-device error); here the
checkpoint is loaded with ``map_location`` onto the chosen device, the images are moved to
that same device, and only the drawing copies them back to the host. Many images (``-n``
up to the 10,000 test images) are drawn as pages of 128, so time and memory stay linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from softmax.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from softmax.data import CLASSES, load_tensors, locate
from softmax.devices import resolve_device


@dataclass(frozen=True)
class Prediction:
    path: Path  # the first (or only) page
    n: int
    wrong: int
    device: str
    pages: tuple[Path, ...] = ()  # every file written, in order


def predict_ch3(checkpoint: Path, device_spec: str, data_root: str | None, n: int,
                out: Path) -> Prediction:
    """Predict the first ``n`` test images and draw them into ``out`` (paged if many).

    ``out``'s suffix must be an image format matplotlib writes (checked first, before the
    checkpoint or the data are read: see softmax.plot.image_format)."""
    from softmax.plot import image_format, prediction_pages

    image_format(out)
    device = resolve_device(device_spec)
    if not checkpoint.exists():  # a FIFO or a device exists: load_checkpoint names it
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
    pages = prediction_pages(images, labels_host, preds_host, CLASSES, out)
    return Prediction(pages[0], len(labels_host), wrong, str(device), tuple(pages))
