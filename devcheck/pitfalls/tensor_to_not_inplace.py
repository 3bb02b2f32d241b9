"""``x.to(device)`` without assignment: Tensor.to returns a copy, Module.to moves in place."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom


def _target(device: str) -> str:
    # On a CPU-only machine the 'meta' device stands in for the accelerator: the
    # mechanism (a discarded Tensor.to result) is the same, only the device name differs.
    return device if device.split(":")[0] in ("cuda", "mps") else "meta"


def reproduce(device: str) -> None:
    import torch

    target = _target(device)
    net = torch.nn.Linear(4, 2)
    net.to(target)  # Module.to: in place, fine
    X = torch.randn(3, 4)
    X.to(target)  # Tensor.to: returns a new tensor that is thrown away
    net(X)


def fixed(device: str) -> str:
    import torch

    target = _target(device)
    net = torch.nn.Linear(4, 2)
    net.to(target)
    X = torch.randn(3, 4)
    X = X.to(target)
    out = net(X)
    return f"X reassigned; output on {out.device}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="tensor_to_not_inplace",
    title="x.to(device) without assignment leaves x where it was",
    needs=("cpu", "cuda", "mps"),
    symptoms=(
        Symptom(
            r"Expected all tensors to be on the same device",
            "expected all tensors to be on the same device",
            "RuntimeError: Expected all tensors to be on the same device, but got mat1 is on "
            "cpu, different from other tensors on cuda:0 (when checking argument in method "
            "wrapper_CUDA_addmm)",
            weight=0.55,
        ),
        Symptom(
            r"Tensor on device \w+(?::\d+)? is not on the expected device \w+",
            "is not on the expected device",
            "RuntimeError: Tensor on device cpu is not on the expected device meta!",
            weight=0.8,
            variant="meta (CPU-only stand-in)",
        ),
        Symptom(
            r"can't optimize a non-leaf Tensor",
            "can't optimize a non-leaf tensor",
            "ValueError: can't optimize a non-leaf Tensor",
            weight=0.8,
            variant="w = torch.randn(..., requires_grad=True).to(device)",
        ),
    ),
    mechanism=(
        "Tensor.to() is not in place: it returns a new tensor (or the same one when nothing "
        "changes) and leaves the original untouched, while Module.to() moves the module's "
        "parameters in place and returns the module. x.to(device) on its own line is a "
        "no-op, and the next operation mixes devices. The result of .to() on a leaf that "
        "requires grad is a non-leaf, which an optimizer rejects."
    ),
    source="torch/_tensor.py / aten Tensor.to (returns a new tensor); "
    "torch/nn/modules/module.py Module.to -> _apply (in place)",
    fixes=(
        Fix("Assign the result", "X = X.to(device)\ny = y.to(device)"),
        Fix("Create leaves directly on the device",
            "w = torch.randn(784, 10, device=device, requires_grad=True)"),
    ),
    hints=(".to(device)", "non-leaf"),
    cpu_note="on a CPU-only machine the 'meta' device stands in for the accelerator",
    related=("mixed_devices",),
)
