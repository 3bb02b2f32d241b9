"""float64 on Apple's MPS device: the Metal backend has no double precision."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom, accelerator


def _mps(device: str) -> str:
    dev = accelerator(device)
    return dev if dev.startswith("mps") else "mps"


def reproduce(device: str) -> None:
    import numpy as np
    import torch

    X = torch.from_numpy(np.zeros((4, 784)))  # numpy's default dtype is float64
    X.to(_mps(device))


def fixed(device: str) -> str:
    import numpy as np
    import torch

    X = torch.from_numpy(np.zeros((4, 784))).to(torch.float32).to(_mps(device))
    return f"{X.dtype} on {X.device}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="mps_float64",
    title="float64 tensors cannot go to Apple's MPS device",
    needs=("mps",),
    symptoms=(
        Symptom(r"Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't "
                r"support float64", "mps framework doesn't support float64",
                "TypeError: Cannot convert a MPS Tensor to float64 dtype as the MPS framework "
                "doesn't support float64. Please use float32 instead.", weight=0.95),
        Symptom(r"Cannot convert a MPS Tensor to float64", "cannot convert a mps tensor to "
                "float64", "[BUG]Cannot convert a MPS Tensor to float64 dtype as the MPS "
                "framework", weight=0.9, variant="cut"),
        Symptom(r"MPS (?:device |backend )?does not support (?:float64|double)",
                "does not support", "RuntimeError: MPS does not support float64",
                weight=0.85, variant="other wordings"),
    ),
    mechanism=(
        "Apple's Metal Performance Shaders have no 64-bit floating point, so torch refuses "
        "to create or move a float64 tensor on 'mps'. float64 usually arrives unnoticed: "
        "numpy arrays are float64 by default (torch.from_numpy keeps the dtype), Python "
        "floats in torch.tensor([...], dtype=torch.double), pandas data, or a library "
        "that builds its buffers in double precision."
    ),
    source="aten/src/ATen/native/mps/operations/Copy.mm / mps utilities (the dtype check "
    "raising 'Cannot convert a MPS Tensor to float64')",
    fixes=(
        Fix("Convert to float32 before moving to MPS",
            "X = torch.from_numpy(arr).float().to('mps')   # or arr.astype('float32')"),
        Fix("Make float32 the default for new floating tensors",
            "torch.set_default_dtype(torch.float32)   # and build numpy data as float32"),
        Fix("Keep the few float64-only steps on the CPU",
            "stats = big_float64_tensor.cpu().double().mean()"),
    ),
    hints=("from_numpy", "float64", "double", "mps"),
    cpu_note="needs Apple's MPS device (macOS on Apple silicon): cannot run here, never faked",
    related=("mps_op_not_implemented", "mps_out_of_memory"),
)
