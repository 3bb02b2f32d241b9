"""A CUDA build of torch on a machine (or container) without the NVIDIA driver."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.pitfalls._driver import fall_back_to_cpu, first_cuda_tensor
from devcheck.probe import devices


def precondition(device: str) -> None:
    if not devices.cuda_build_version():
        import torch

        raise Skip(f"this torch build ({torch.__version__}) is CPU-only; see cpu_only_wheel")
    if devices.driver_cuda_version() is not None:
        raise Skip("an NVIDIA driver is installed here, so 'Found no NVIDIA driver' cannot "
                   "happen")


def fixed(device: str) -> str:
    return fall_back_to_cpu("install the driver to use the GPU")


PITFALL = Pitfall(
    reproduce=first_cuda_tensor,
    fixed=fixed,
    precondition=precondition,
    id="no_driver",
    title="No NVIDIA driver: torch.cuda.is_available() is False without a warning",
    needs=("cpu",),
    symptoms=(
        Symptom(r"Found no NVIDIA driver on your system", "found no nvidia driver",
                "RuntimeError: Found no NVIDIA driver on your system. Please check that you "
                "have an NVIDIA GPU and installed a driver from "
                "http://www.nvidia.com/Download/index.aspx"),
        Symptom(r"No CUDA GPUs are available", "no cuda gpus are available",
                "RuntimeError: No CUDA GPUs are available", weight=0.8,
                variant="driver present but no visible GPU (CUDA_VISIBLE_DEVICES='', "
                "container without --gpus)"),
        Symptom(r"no CUDA-capable device is detected", "no cuda-capable device is detected",
                "RuntimeError: cuda runtime error (38) : no CUDA-capable device is detected "
                "at /pytorch/aten/src/THC/THCGeneral.cpp:70", weight=0.85,
                variant="cudaErrorNoDevice (38; 100 since CUDA 10.1)"),
        Symptom(r"CUDA driver initialization failed", "cuda driver initialization failed",
                "RuntimeError: CUDA driver initialization failed, you might not have a CUDA "
                "gpu.", weight=0.8),
    ),
    mechanism=(
        "The torch wheel bundles the CUDA runtime but not the driver: libcuda "
        "(libnvidia-ml for NVML) comes with the NVIDIA driver. Without it (a machine "
        "without an NVIDIA GPU, a container started without GPU access, a WSL setup "
        "missing the Windows driver) is_available() returns False silently and the first "
        "CUDA tensor raises from torch.cuda._lazy_init -> torch._C._cuda_init."
    ),
    source="torch/cuda/__init__.py _lazy_init -> torch._C._cuda_init (c10/cuda)",
    fixes=(
        Fix("Install the NVIDIA driver / start the container with GPU access",
            "docker run --gpus all ...   # or: sudo apt install nvidia-driver-580"),
        Fix("Fall back explicitly where no GPU is expected",
            "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')"),
    ),
    hints=("is_available", "nvidia-smi"),
    related=("cpu_only_wheel", "driver_too_old"),
    cuda_errors=(38, 100),
)
