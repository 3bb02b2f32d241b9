"""Loading a checkpoint saved on a GPU where CUDA is unavailable."""

from __future__ import annotations

import io
import os

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.probe import devices


def _gpu_checkpoint() -> io.BytesIO:
    """A real checkpoint whose storages carry the 'cuda:0' location tag.

    torch.save records ``location_tag(storage)`` per storage; tagging them 'cuda:0' writes
    exactly the file a GPU run would, without needing a GPU here.
    """
    import torch
    import torch.serialization as ser

    state = torch.nn.Linear(4, 2).state_dict()
    buf = io.BytesIO()
    original = ser.location_tag
    ser.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(state, buf)
    finally:
        ser.location_tag = original
    buf.seek(0)
    return buf


def _hide_gpus() -> None:
    # The lab child has not initialised CUDA, so hiding the GPUs here makes this process
    # behave like a CPU-only machine (the variable is read at CUDA initialisation).
    if devices.cuda_initialized():
        raise Skip("CUDA is already initialised in this process; cannot hide the GPUs")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def reproduce(device: str) -> None:
    import torch

    _hide_gpus()
    torch.load(_gpu_checkpoint(), weights_only=True)


def fixed(device: str) -> str:
    import torch

    _hide_gpus()
    state = torch.load(_gpu_checkpoint(), map_location="cpu", weights_only=True)
    net = torch.nn.Linear(4, 2)
    net.load_state_dict(state)
    return f"loaded {len(state)} tensors onto {state['weight'].device}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="gpu_checkpoint_on_cpu",
    title="torch.load of a GPU-saved checkpoint on a machine without CUDA",
    needs=("cpu",),
    symptoms=(
        Symptom(r"Attempting to deserialize object on a CUDA device but "
                r"torch\.cuda\.is_available\(\) is False", "attempting to deserialize object "
                "on a cuda device", "RuntimeError: Attempting to deserialize object on a CUDA "
                "device but torch.cuda.is_available() is False. If you are running on a "
                "CPU-only machine, please use torch.load with "
                "map_location=torch.device('cpu') to map your storages to the CPU."),
    ),
    mechanism=(
        "torch.save records each storage's device as a location tag ('cuda:0'); torch.load "
        "restores storages to that device unless map_location says otherwise, and refuses "
        "when CUDA is unavailable here."
    ),
    source="torch/serialization.py _validate_device (via default_restore_location)",
    fixes=(
        Fix("Map storages to the device you have",
            "state = torch.load(path, map_location='cpu')\n"
            "# or: map_location=device  (device = cuda if available else cpu)"),
        Fix("Save device-independent checkpoints",
            "torch.save({k: v.cpu() for k, v in net.state_dict().items()}, path)"),
    ),
    hints=("torch.load", "map_location"),
    related=("invalid_device_ordinal",),
)
