"""The GPU's compute capability is missing from the wheel's kernels."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.probe import devices


def precondition(device: str) -> None:
    index = int(device.split(":")[1]) if ":" in device else 0
    major, minor = devices.cuda_capability(index)
    arches = devices.cuda_arch_list()
    cc = major * 10 + minor
    # sm_XY kernels run on a GPU of the same major version with minor >= Y
    sms = [int("".join(c for c in a[3:] if c.isdigit()) or 0) for a in arches
           if a.startswith("sm_")]
    if any(v // 10 == major and v <= cc for v in sms):
        raise Skip(f"this GPU (sm_{major}{minor}) is supported by the wheel's kernels "
                   f"({', '.join(arches)})")


def reproduce(device: str) -> None:
    import torch

    (torch.ones(4, device=device) * 2).sum().item()


def fixed(device: str) -> str:
    import torch

    return f"ran on the CPU instead: {(torch.ones(4) * 2).sum().item()}"


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    precondition=precondition,
    id="gpu_arch_not_in_wheel",
    title="GPU too old (or too new) for the installed wheel's compiled kernels",
    needs=("cuda",),
    symptoms=(
        Symptom(r"no kernel image is available for execution on the device",
                "no kernel image is available",
                "RuntimeError: CUDA error: no kernel image is available for execution on the "
                "device"),
        Symptom(r"invalid device function", "invalid device function",
                "THCudaCheck FAIL file=/pytorch/aten/src/THC/THCGeneral.cpp line=405 error=8 : "
                "invalid device function", weight=0.85,
                variant="cudaErrorInvalidDeviceFunction (8; 98 since CUDA 10.1)"),
        Symptom(r"which is of compute capability \(CC\) \d+\.\d+", "compute capability (cc)",
                "UserWarning: Found GPU0 NVIDIA GeForce GTX 1080 which is of compute "
                "capability (CC) 6.1.", weight=0.8, variant="torch >= 2.8 warning"),
        Symptom(r"with CUDA capability sm_\d+ is not compatible with the current PyTorch",
                "is not compatible with the current pytorch installation",
                "UserWarning: NVIDIA GeForce RTX 5090 with CUDA capability sm_120 is not "
                "compatible with the current PyTorch installation.", weight=0.85),
        Symptom(r"which is of cuda capability \d+\.\d+\.\s*PyTorch no longer supports",
                "pytorch no longer supports this gpu",
                "UserWarning: Found GPU0 GeForce GTX 760 which is of cuda capability 3.0. "
                "PyTorch no longer supports this GPU because it is too old.", weight=0.85),
    ),
    mechanism=(
        "A wheel ships kernels only for the architectures in torch.cuda.get_arch_list() "
        "(2.14 cu130: sm_75..sm_120). A GPU outside that list (e.g. Pascal sm_61, or a "
        "brand-new card with an older wheel) initialises, warns, and fails at the first "
        "kernel launch."
    ),
    source="torch/cuda/__init__.py _check_capability / _check_cubins (warnings); the "
    "kernel launch raises cudaErrorNoKernelImageForDevice",
    fixes=(
        Fix("Install a wheel built for your GPU's architecture (devcheck doctor names it)",
            "# Maxwell/Pascal/Volta (sm_50-sm_70): cu126; Blackwell (sm_100, sm_120): cu128+\n"
            "pip install torch --index-url https://download.pytorch.org/whl/cu126"),
    ),
    hints=("get_arch_list", "sm_"),
    related=("driver_too_old",),
    cuda_errors=(8, 98, 48, 209),
)
