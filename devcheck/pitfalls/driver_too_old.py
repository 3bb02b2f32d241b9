"""The driver supports an older CUDA than the one bundled in the wheel."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom
from devcheck.pitfalls._driver import fall_back_to_cpu, first_cuda_tensor
from devcheck.probe import devices
from devcheck.probe.devices import cuda_version_str as fmt


def precondition(device: str) -> None:
    wheel = devices.wheel_cuda_version()
    if wheel is None:
        raise Skip("this torch build is CPU-only")
    driver = devices.driver_cuda_version()
    if driver is None:
        raise Skip("no NVIDIA driver here (see no_driver), so it cannot be too old")
    if driver >= wheel:
        raise Skip(f"the driver supports CUDA {fmt(driver)} >= the wheel's CUDA {fmt(wheel)}")
    if devices.cuda_available():  # CUDA minor-version compatibility (same major release)
        raise Skip(f"the driver's CUDA {fmt(driver)} is older than the wheel's {fmt(wheel)}, "
                   "but CUDA initialises anyway (minor-version compatibility)")


def fixed(device: str) -> str:
    return fall_back_to_cpu("update the driver")


PITFALL = Pitfall(
    reproduce=first_cuda_tensor,
    fixed=fixed,
    precondition=precondition,
    id="driver_too_old",
    title="NVIDIA driver older than the CUDA runtime bundled in the torch wheel",
    needs=("cpu", "cuda"),
    symptoms=(
        Symptom(r"The NVIDIA driver on your system is too old", "driver on your system is too "
                "old", "RuntimeError: The NVIDIA driver on your system is too old (found "
                "version 11040). Please update your GPU driver by downloading and installing "
                "a new version from the URL: http://www.nvidia.com/Download/index.aspx"),
        Symptom(r"CUDA driver version is insufficient for CUDA runtime version",
                "driver version is insufficient",
                "RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA "
                "runtime version"),
    ),
    mechanism=(
        "Each cuXXX wheel bundles a CUDA runtime (torch.version.cuda); the driver must "
        "support at least that CUDA version (nvidia-smi's 'CUDA Version'). With an older "
        "driver torch.cuda.is_available() is False and initialisation fails."
    ),
    source="torch/cuda/__init__.py _lazy_init -> torch._C._cuda_init (cudaGetDeviceCount)",
    fixes=(
        Fix("Update the driver", "sudo apt install nvidia-driver-580   # or the vendor "
            "installer"),
        Fix("Or install a wheel built for an older CUDA the driver supports",
            "pip install torch --index-url https://download.pytorch.org/whl/cu118"),
    ),
    hints=("nvidia-smi", "cuda version"),
    related=("no_driver",),
    cuda_errors=(35,),
)
