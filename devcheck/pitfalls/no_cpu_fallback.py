"""Hard-coded ``'cuda'`` / ``.cuda()`` with no availability check: dies on CPU-only machines.

The code works on the author's GPU box and fails on a laptop, a Mac, or the CPU runner CI
gives you. The reproduction hides the GPUs from its own process (as a CPU runner has
none), so it shows the failure on any machine, with or without a GPU.
"""

from __future__ import annotations

import os

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom


def _as_cpu_runner() -> None:
    # Read at CUDA initialisation: the lab child has not initialised CUDA, so from here on
    # this process sees no GPU, like a CPU-only CI runner.
    import torch

    if torch.cuda.is_initialized():
        raise Skip("CUDA is already initialised in this process; cannot hide the GPUs")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def reproduce(device: str) -> None:
    import torch

    _as_cpu_runner()
    net = torch.nn.Linear(4, 2).cuda()  # hard-coded: no is_available() anywhere
    net(torch.randn(3, 4, device="cuda"))


def fixed(device: str) -> str:
    import torch

    _as_cpu_runner()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = torch.nn.Linear(4, 2).to(dev)
    out = net(torch.randn(3, 4, device=dev))
    return f"the same code ran on {out.device} (the fallback), and uses CUDA where it exists"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="no_cpu_fallback",
    title="Hard-coded 'cuda' with no torch.cuda.is_available() check (fails on CPU runners)",
    needs=("cpu",),
    symptoms=(
        # The same messages as no_driver / cpu_only_wheel, weighted lower: on a machine that
        # should have a GPU those are the better explanation.
        Symptom(r"Found no NVIDIA driver on your system", "found no nvidia driver",
                "RuntimeError: Found no NVIDIA driver on your system. Please check that you "
                "have an NVIDIA GPU and installed a driver from "
                "http://www.nvidia.com/Download/index.aspx", weight=0.5,
                variant="CPU machine, CUDA wheel"),
        Symptom(r"Torch not compiled with CUDA enabled", "torch not compiled with cuda enabled",
                "AssertionError: Torch not compiled with CUDA enabled", weight=0.5,
                variant="CPU-only wheel (CI runners, Macs)"),
        Symptom(r"No CUDA GPUs are available", "no cuda gpus are available",
                "RuntimeError: No CUDA GPUs are available", weight=0.5,
                variant="driver present, no visible GPU"),
    ),
    mechanism=(
        "'cuda' written into the code (.cuda(), .to('cuda'), device='cuda') asks for a "
        "device that CPU-only machines do not have; torch raises at the first CUDA tensor. "
        "Nothing chooses the CPU instead unless the code checks torch.cuda.is_available()."
    ),
    source="torch/cuda/__init__.py _lazy_init (raises when CUDA cannot be initialised)",
    fixes=(
        Fix("Choose the device once, at start-up, and pass it everywhere",
            "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
            "net = Net().to(device)\nX, y = X.to(device), y.to(device)"),
        Fix("Make it a command-line option with an 'auto' default",
            "parser.add_argument('--device', default='auto')"),
        Fix("Mark GPU-only tests so CPU runners skip them with the reason",
            "@pytest.mark.requires_cuda\ndef test_fast_path(): ..."),
    ),
    hints=(".cuda()", "cuda", "ci"),
    related=("no_driver", "cpu_only_wheel"),
)
