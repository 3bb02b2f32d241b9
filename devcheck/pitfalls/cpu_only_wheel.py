"""A CPU-only torch build asked for CUDA."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.pitfalls._driver import fall_back_to_cpu, first_cuda_tensor
from devcheck.probe import devices


def precondition(device: str) -> None:
    cuda, hip = devices.cuda_build_version(), devices.hip_build_version()
    if cuda or hip:
        import torch

        has = f"CUDA {cuda}" if cuda else f"ROCm {hip}"
        raise Skip(f"this torch build ({torch.__version__}) has {has}; "
                   "the pitfall needs a CPU-only build")


def fixed(device: str) -> str:
    return fall_back_to_cpu("reinstall a cuXXX wheel to use the GPU")


PITFALL = Pitfall(
    reproduce=first_cuda_tensor,
    fixed=fixed,
    precondition=precondition,
    id="cpu_only_wheel",
    title="CPU-only torch build (e.g. PyPI's Windows wheel): CUDA silently unavailable",
    needs=("cpu",),
    symptoms=(
        Symptom(r"Torch not compiled with CUDA enabled", "torch not compiled with cuda",
                "AssertionError: Torch not compiled with CUDA enabled"),
    ),
    mechanism=(
        "The installed wheel was built without CUDA (torch.version.cuda is None, version "
        "ends in +cpu): torch.cuda.is_available() is silently False and the first CUDA "
        "request fails in torch.cuda._lazy_init. pip's default index serves CPU-only "
        "wheels on Windows (and on Linux when the cuXXX index is not used)."
    ),
    source="torch/cuda/__init__.py _lazy_init (hasattr(torch._C, '_cuda_getDeviceCount'))",
    fixes=(
        Fix("Reinstall from the CUDA index matching your driver (see devcheck doctor)",
            "pip uninstall -y torch torchvision\n"
            "pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126"),
        Fix("Pick the device from what is available",
            "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')"),
    ),
    hints=("+cpu", "is_available"),
    related=("no_driver",),
)
