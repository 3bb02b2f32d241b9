"""pin_memory=True where there is nothing to pin for."""

from __future__ import annotations

import os
import warnings

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.probe import devices


def _no_accelerator() -> None:
    if devices.mps_available():
        raise Skip("MPS is available here; the warning needs a machine without accelerators")
    if devices.cuda_initialized():
        raise Skip("CUDA already initialised; cannot hide the GPUs")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the lab child is a throwaway process


def reproduce(device: str) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    _no_accelerator()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # make the warning visible as the error it hides
        loader = DataLoader(TensorDataset(torch.ones(8, 2)), batch_size=4, pin_memory=True)
        next(iter(loader))


def fixed(device: str) -> str:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    _no_accelerator()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pin = torch.accelerator.is_available()
        loader = DataLoader(TensorDataset(torch.ones(8, 2)), batch_size=4, pin_memory=pin)
        next(iter(loader))
    return f"pin_memory={pin}: no warning"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="pin_memory_without_accelerator",
    title="pin_memory=True without a GPU (d2l-style loaders copied to a CPU machine)",
    needs=("cpu",),
    symptoms=(
        Symptom(r"pin[_ ]?memory'?\s*(?:argument|arg)?\s*(?:is\s+)?set\s+(?:as|to)\s+true,?\s+"
                r"but\s+no\s+(?:accelerator|accelarator|acclerator|gpu|cuda)\w*\s+(?:is\s+|was\s+)?"
                r"found", "but no", "warning: pin_memory arg is set to True, but no "
                "accelerator was found, so device pinned memory won't be used", weight=0.85,
                variant="retyped or paraphrased (matched on stable fragments)"),
        Symptom(r"'pin_memory' argument is set as true but no accelerator is found",
                "argument is set as true but", "UserWarning: 'pin_memory' argument is set as "
                "true but no accelerator is found, then device pinned memory won't be used."),
        Symptom(r"'pin_memory' argument is set as true but (?:not supported on MPS|CUDA is "
                r"not available)", "argument is set as true but", "UserWarning: 'pin_memory' "
                "argument is set as true but not supported on MPS now, then device pinned "
                "memory won't be used.", variant="torch 2.0-2.4"),
    ),
    mechanism=(
        "Pinned (page-locked) host memory only speeds up host-to-accelerator copies. With "
        "no accelerator the DataLoader ignores pin_memory and warns each time an iterator "
        "is created."
    ),
    source="torch/utils/data/dataloader.py _BaseDataLoaderIter.__init__ "
    "(torch.accelerator.is_available check)",
    fixes=(
        Fix("Pin only when an accelerator exists",
            "DataLoader(ds, batch_size=256, pin_memory=torch.accelerator.is_available())"),
    ),
    hints=("pin_memory",),
)
