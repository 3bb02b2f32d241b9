"""numpy() on a tensor that is part of the autograd graph."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Symptom


def reproduce(device: str) -> None:
    import torch

    w = torch.randn(3, requires_grad=True, device=device)
    w.cpu().numpy()  # on the host now (a no-op on the CPU), but still part of the graph


def fixed(device: str) -> str:
    import torch

    w = torch.randn(3, requires_grad=True, device=device)
    arr = w.detach().cpu().numpy()
    return f"detached copy {arr.shape}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="numpy_on_requires_grad",
    title="numpy() on a tensor that requires grad",
    needs=("cpu", "cuda", "mps"),
    symptoms=(
        Symptom(
            r"Can't call numpy\(\) on Tensor that requires grad",
            "can't call numpy() on tensor that requires grad",
            "RuntimeError: Can't call numpy() on Tensor that requires grad. Use "
            "tensor.detach().numpy() instead.",
        ),
        Symptom(
            r"Can't call numpy\(\) on Variable that requires grad",
            "can't call numpy() on variable",
            "RuntimeError: Can't call numpy() on Variable that requires grad. Use "
            "var.detach().numpy() instead.",
            variant="torch < 1.5",
        ),
    ),
    mechanism=(
        "A numpy array sharing the tensor's memory would let values escape autograd "
        "tracking, so torch refuses; .detach() says you only want the values."
    ),
    source="torch/csrc/utils/tensor_numpy.cpp tensor_to_numpy (requires_grad check)",
    fixes=(
        Fix("Detach first (and .cpu() when on an accelerator)",
            "arr = t.detach().cpu().numpy()"),
        Fix("Or compute under no_grad", "with torch.no_grad():\n    y_hat = net(X)"),
    ),
    hints=("requires_grad", "detach"),
    related=("cuda_tensor_to_numpy",),
)
