"""A GPU is available, but the model and batches never leave the CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devcheck.pitfalls._base import Fix, Pitfall, Symptom, accelerator

if TYPE_CHECKING:
    import torch


def _check_placement(net: torch.nn.Module, X: torch.Tensor, device: torch.device) -> None:
    """The check devcheck's guard runs: where do the parameters and the batch live?"""
    p = next(net.parameters())
    for name, t in (("model parameters", p), ("batch X", X)):
        if t.device.type != device.type:
            raise RuntimeError(
                f"{name} are on {t.device} but the training device is {device}: "
                "call .to(device) (the GPU is available but unused)"
            )


def reproduce(device: str) -> None:
    import torch

    dev = torch.device(accelerator(device))  # "device = try_gpu()" ... and then never used
    net = torch.nn.Linear(8, 3)
    X, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    torch.nn.functional.cross_entropy(net(X), y).backward()  # trains, slowly, on the CPU
    _check_placement(net, X, dev)


def fixed(device: str) -> str:
    import torch

    dev = torch.device(accelerator(device))
    net = torch.nn.Linear(8, 3).to(dev)
    X, y = torch.randn(16, 8).to(dev), torch.randint(0, 3, (16,)).to(dev)
    torch.nn.functional.cross_entropy(net(X), y).backward()
    _check_placement(net, X, dev)
    return f"parameters and batch on {next(net.parameters()).device}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="cuda_available_but_unused",
    title="torch.cuda.is_available() is True but nothing runs on the GPU",
    needs=("cuda", "mps"),
    symptoms=(
        Symptom(r"(?:model parameters|batch \w+) (?:are|is) on cpu but the training device "
                r"is (?P<device>cuda|mps)", "but the training device is",
                "RuntimeError: model parameters are on cpu but the training device is "
                "cuda:0: call .to(device) (the GPU is available but unused)"),
    ),
    mechanism=(
        "is_available() only reports that CUDA could be used; tensors are created on the "
        "CPU unless given a device, and modules stay where they were built. Training "
        "works, just at CPU speed, with the GPU idle (0% in nvidia-smi)."
    ),
    source="torch/nn/modules/module.py (parameters created on the CPU); nothing raises",
    fixes=(
        Fix("The book's from-scratch net is a function over W and b (no net.to): create "
            "them on the device, and move every batch at the loop boundary",
            "device = torch.device('{device}')\n"
            "W = torch.normal(0, 0.01, size=(784, 10), device=device, requires_grad=True)\n"
            "b = torch.zeros(10, device=device, requires_grad=True)\n"
            "for X, y in train_iter:\n    X, y = X.to(device), y.to(device)"),
        Fix("An nn.Module model: move it once, then every batch",
            "net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to(device)\n"
            "for X, y in loader:\n    X, y = X.to(device), y.to(device)"),
        Fix("Check where things are", "print(next(net.parameters()).device, X.device)"),
    ),
    hints=("is_available", "nvidia-smi"),
    cpu_note="needs an accelerator: on a CPU-only machine nothing is left unused",
    related=("mixed_devices",),
)
