"""The CUDA driver API through ctypes: which CUDA the installed driver supports.

No pynvml and no CUDA initialisation: cheap enough for the lab's parent and children and
for a machine where NVML is missing but libcuda is not.
"""

from __future__ import annotations

import ctypes
import sys


def driver_cuda_version() -> int | None:
    """The newest CUDA the installed driver supports (e.g. 13000), or None without a driver."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    version = ctypes.c_int(0)
    try:
        if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (AttributeError, OSError):
        return None
    return version.value


def cuda_version_str(v: int) -> str:
    """CUDA's integer encoding as people write it: 13000 -> '13.0', 12040 -> '12.4'."""
    return f"{v // 1000}.{(v % 1000) // 10}"
