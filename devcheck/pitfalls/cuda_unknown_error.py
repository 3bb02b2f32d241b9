"""``CUDA error: unknown error``: the driver, not the program, is in a bad state."""

from __future__ import annotations

from devcheck.pitfalls._base import Fix, Pitfall, Skip, Symptom


def reproduce(device: str) -> None:
    raise Skip("'unknown error' comes from the driver's state (after suspend/resume, a "
               "driver update without a reboot, a GPU fault or a display watchdog): it "
               "cannot be provoked safely, so it is never faked")


def fixed(device: str) -> str:  # never reached: reproduce always skips
    raise Skip("nothing to fix without a reproduction")


PITFALL = Pitfall(
    reproduce=reproduce,
    fixed=fixed,
    id="cuda_unknown_error",
    title="CUDA 'unknown error' (or unspecified launch failure): the driver or GPU failed "
    "underneath torch",
    needs=("cuda",),
    symptoms=(
        Symptom(r"CUDA error: unknown error", "cuda error: unknown error",
                "RuntimeError: CUDA error: unknown error\nCUDA kernel errors might be "
                "asynchronously reported at some other API call, so the stacktrace below "
                "might be incorrect.", weight=0.95),
        Symptom(r"CUDA unknown error - this may be due to an incorrectly set up environment",
                "cuda unknown error", "UserWarning: CUDA initialization: CUDA unknown error "
                "- this may be due to an incorrectly set up environment, e.g. changing env "
                "variable CUDA_VISIBLE_DEVICES after program start. Setting the available "
                "devices to be zero.", weight=0.95, variant="at initialisation"),
        Symptom(r"CUDA unknown error", "cuda unknown error", "RuntimeError: CUDA unknown error",
                weight=0.9, variant="short"),
        Symptom(r"cuda runtime error \(30\)|error=30 : unknown error", "unknown error",
                "RuntimeError: cuda runtime error (30) : unknown error at "
                "/pytorch/aten/src/THC/THCGeneral.cpp:70", weight=0.9,
                variant="torch <= 1.x (cudaErrorUnknown = 30)"),
        Symptom(r"CUDA error: unspecified launch failure", "unspecified launch failure",
                "RuntimeError: CUDA error: unspecified launch failure", weight=0.85,
                variant="kernel died (cudaErrorLaunchFailure, 719; 4 before CUDA 10.1)"),
        Symptom(r"the launch timed out and was terminated", "launch timed out",
                "RuntimeError: CUDA error: the launch timed out and was terminated",
                weight=0.85, variant="display watchdog killed a long kernel"),
        Symptom(r"cudaErrorUnknown|CUDA_ERROR_UNKNOWN", "unknown",
                "cudaErrorUnknown: unknown error", weight=0.85, variant="enum name"),
    ),
    mechanism=(
        "The CUDA driver reports a failure it cannot classify, so the cause is outside "
        "the Python program: most often the laptop or desktop was suspended and resumed "
        "while a CUDA program ran (the nvidia_uvm module comes back broken until reloaded), "
        "the driver was updated without a reboot (user-space and kernel module versions "
        "differ), a container sees the GPU without the matching driver libraries, WSL's "
        "GPU bridge failed, or the GPU itself faulted (power, heat, an Xid error in the "
        "kernel log). 'unspecified launch failure' and 'launch timed out' are kernels "
        "killed by the same kind of event, or by the display watchdog on a GPU that also "
        "drives the screen. Torch's hint about CUDA_VISIBLE_DEVICES is rarely the cause."
    ),
    source="returned by the CUDA driver at context creation or kernel completion "
    "(c10/cuda/CUDAFunctions.cpp device_count; cudaErrorUnknown = 999, 30 before CUDA 10.1)",
    fixes=(
        Fix("After a suspend/resume: reload the NVIDIA unified-memory module (or reboot)",
            "sudo rmmod nvidia_uvm && sudo modprobe nvidia_uvm"),
        Fix("After a driver update: reboot, so the kernel module matches the libraries",
            "nvidia-smi   # 'Driver/library version mismatch' confirms it\nsudo reboot"),
        Fix("Check the GPU's health and the kernel log for Xid errors",
            "nvidia-smi -q | grep -i -A3 'xid\\|retired\\|ecc'\nsudo dmesg | grep -i xid"),
        Fix("Check the whole setup (driver, wheel, visible devices)", "devcheck doctor"),
    ),
    warnings=(
        "CUDA_VISIBLE_DEVICES changed after torch initialised CUDA is ignored, not an "
        "'unknown error': set it before the first CUDA call if you need it.",
    ),
    hints=("suspend", "nvidia_uvm", "xid", "wsl"),
    cpu_note="cannot be reproduced on purpose: it is a driver/hardware state, never faked",
    related=("no_driver", "driver_too_old", "illegal_memory_access"),
    cuda_errors=(30, 999, 719, 6, 702),
)
