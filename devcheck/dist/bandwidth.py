"""Bandwidth arithmetic, as nccl-tests defines it, and what a link should give. Pure.

nccl-tests (``doc/PERFORMANCE.md``): ``algbw = size / time``; ``busbw = algbw x factor``
where the factor makes the figure comparable with the hardware's peak whatever the rank
count: ``2(n-1)/n`` for all_reduce (a ring sends and receives each byte twice, less its own
share), ``(n-1)/n`` for all_gather / reduce_scatter / all_to_all, ``1`` for broadcast and
reduce. For all_gather the size is the whole gathered buffer (n x each rank's part).
"""

from __future__ import annotations

import re

OPS = ("all_reduce", "all_gather", "broadcast")
GB = 1e9

# Per-link, per-direction NVLink bandwidth by NVLink version (GB/s), from NVIDIA's specs:
# V100 NVLink2 25 GB/s x 6, A100 NVLink3 25 x 12, H100/H200 NVLink4 25 x 18 (450 GB/s),
# B200 NVLink5 50 x 18 (900 GB/s).
NVLINK_GBPS_PER_LINK = {1: 20.0, 2: 25.0, 3: 25.0, 4: 25.0, 5: 50.0}
# PCIe usable bandwidth per lane and direction (GB/s) after line encoding.
PCIE_GBPS_PER_LANE = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}
# Through the CPU (SYSTEM: across sockets) NCCL usually reaches well under PCIe's peak.
SYSTEM_FRACTION = 0.5

DEFAULT_SIZES = (4 * 1024, 256 * 1024, 4 * 1024**2, 32 * 1024**2)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
MAX_SIZE = 4 * 1024**3


def bus_factor(op: str, nranks: int) -> float:
    """nccl-tests' factor turning algbw into busbw for ``op`` on ``nranks`` ranks."""
    if nranks < 1:
        raise ValueError(f"nranks must be >= 1, got {nranks}")
    if op == "all_reduce":
        return 2 * (nranks - 1) / nranks
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (nranks - 1) / nranks
    if op in ("broadcast", "reduce"):
        return 1.0
    raise ValueError(f"unknown collective {op!r}; known: all_reduce, all_gather, broadcast")


def algbw_gbps(size_bytes: int, time_s: float) -> float:
    """Algorithm bandwidth in GB/s (10^9 bytes, as nccl-tests prints)."""
    return size_bytes / time_s / GB if time_s > 0 else 0.0


def busbw_gbps(op: str, size_bytes: int, time_s: float, nranks: int) -> float:
    return algbw_gbps(size_bytes, time_s) * bus_factor(op, nranks)


def parse_size(text: str) -> int:
    """``"4KiB"``, ``"256k"``, ``"32M"``, ``"1048576"`` -> bytes; ValueError says why."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (expected e.g. 4096, 64KiB, 4MiB, 1GiB)")
    value = int(float(m.group(1)) * _UNITS[unit])
    if not 4 <= value <= MAX_SIZE:
        raise ValueError(f"{text!r} is {value} bytes; expected 4 bytes to 4 GiB")
    return value - value % 4  # whole float32 elements


def parse_sizes(text: str) -> tuple[int, ...]:
    """A comma-separated list of sizes, sorted and without duplicates."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{text!r} lists no size (expected e.g. 4KiB,1MiB,32MiB)")
    return tuple(sorted({parse_size(p) for p in parts}))


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


def expected_link_gbps(common_ancestor: str | None, nvlinks: int, nvlink_version: int | None,
                       pcie_gen: int | None, pcie_width: int | None) -> float | None:
    """What a GPU pair's link should carry per direction (GB/s): the busbw to expect.

    NVLink: links x per-link rate. Otherwise PCIe gen x width, halved when the path
    crosses the CPU interconnect (SYSTEM). None when the facts do not say.
    """
    if nvlinks > 0:
        per_link = NVLINK_GBPS_PER_LINK.get(nvlink_version or 0, 25.0)
        return nvlinks * per_link
    if pcie_gen is None or pcie_width is None or pcie_gen not in PCIE_GBPS_PER_LANE:
        return None
    peak = PCIE_GBPS_PER_LANE[pcie_gen] * pcie_width
    return peak * SYSTEM_FRACTION if common_ancestor == "SYSTEM" else peak
