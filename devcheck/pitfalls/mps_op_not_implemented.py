"""An operator with no MPS kernel: NotImplementedError unless the CPU fallback is on."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.pitfalls.mps_float64 import _mps


def _candidates() -> list[tuple[str, Callable[[Any], Any]]]:
    """Operators that lacked MPS kernels in recent torch releases (tried in order)."""
    import torch

    return [
        ("torch.linalg.eigvals", lambda x: torch.linalg.eigvals(x)),
        ("torch.linalg.eig", lambda x: torch.linalg.eig(x)),
        ("torch.special.airy_ai", lambda x: torch.special.airy_ai(x)),
        ("torch.nn.functional.max_unpool3d", lambda x: torch.nn.functional.max_unpool3d(
            x.reshape(1, 1, 2, 2, 4), torch.zeros(1, 1, 2, 2, 4, dtype=torch.long,
                                                  device=x.device), (2, 2, 2))),
    ]


def reproduce(device: str) -> None:
    import torch

    if os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK") == "1":
        raise Skip("PYTORCH_ENABLE_MPS_FALLBACK=1 is set here: missing ops silently run "
                   "on the CPU instead of raising")
    x = torch.randn(4, 4, device=_mps(device))
    tried = []
    for name, op in _candidates():
        tried.append(name)
        op(x)  # the first op without an MPS kernel raises NotImplementedError here
    raise Skip(f"every candidate op ({', '.join(tried)}) has an MPS kernel in this torch "
               f"({torch.__version__})")


def fixed(device: str) -> str:
    import torch

    x = torch.randn(4, 4, device=_mps(device))
    for name, op in _candidates():
        try:
            op(x)
        except NotImplementedError:
            out = op(x.cpu())  # run the missing op on the CPU, move the result back
            first = out[0] if isinstance(out, tuple) else out
            return f"{name} ran on the CPU and came back: {first.to(x.device).device}"
    return "every candidate op runs on MPS here"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="mps_op_not_implemented",
    title="An operator is not implemented for Apple's MPS device",
    needs=("mps",),
    symptoms=(
        Symptom(r"The operator '[\w:.]+' is not current(?:ly)? implemented for the MPS "
                r"device", "implemented for the mps device",
                "NotImplementedError: The operator 'aten::_linalg_eigvals' is not currently "
                "implemented for the MPS device. If you want this op to be added in priority "
                "during the prototype phase of this feature, please comment on "
                "https://github.com/pytorch/pytorch/issues/77764. As a temporary fix, you "
                "can set the environment variable `PYTORCH_ENABLE_MPS_FALLBACK=1` to use the "
                "CPU as a fallback for this op. WARNING: this will be slower than running "
                "natively on MPS.", weight=0.95),
        Symptom(r"not (?:currently )?implemented for (?:the )?'?MPS'?", "implemented for",
                "NotImplementedError: \"upsample_nearest3d\" not implemented for 'MPS'",
                weight=0.8, variant="other wordings"),
    ),
    mechanism=(
        "The MPS backend implements operators one by one; an operator with no MPS kernel "
        "raises NotImplementedError naming it (aten::... for torch's own, or a library's "
        "op such as torchvision::nms). Torch does not silently fall back to the CPU unless "
        "PYTORCH_ENABLE_MPS_FALLBACK=1 is set before torch starts."
    ),
    source="aten/src/ATen/mps/MPSFallback.mm (mps_error_fallback, registered for every op "
    "without an MPS kernel)",
    fixes=(
        Fix("Enable the CPU fallback for missing ops (set before `import torch`)",
            "PYTORCH_ENABLE_MPS_FALLBACK=1 python train.py"),
        Fix("Run just that operation on the CPU and move the result back",
            "out = torch.linalg.eigvals(x.cpu()).to(x.device)"),
        Fix("Upgrade torch: MPS coverage grows every release",
            "pip install --upgrade torch"),
    ),
    warnings=(
        "Setting os.environ['PYTORCH_ENABLE_MPS_FALLBACK'] after torch is imported has no "
        "effect: set it in the shell or at the very top of the script.",
    ),
    hints=("PYTORCH_ENABLE_MPS_FALLBACK", "77764", "mps"),
    cpu_note="needs Apple's MPS device (macOS on Apple silicon): cannot run here, never faked",
    related=("mps_float64",),
)
