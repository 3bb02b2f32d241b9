"""NVML's GPU numbering vs torch's: ``CUDA_VISIBLE_DEVICES`` decides which is which.

NVML numbers every GPU of the machine in PCI bus order; torch (the CUDA runtime) numbers
only the GPUs ``CUDA_VISIBLE_DEVICES`` lets it see, in the order listed there. With
``CUDA_VISIBLE_DEVICES=2,0`` the job's ``cuda:0`` is NVML's GPU 2. The summary speaks
torch's language ("cuda:0 = GPU 2"), so this mapping is computed once per run from the
environment the job was started with. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from devcheck.facts import ToDict


@dataclass(frozen=True)
class VisibleMap(ToDict):
    """``torch_index`` maps NVML index -> torch's ``cuda:N`` for the GPUs the job may see.

    ``note`` explains a surprise (an entry CUDA will ignore, an order that may differ);
    ``setting`` is the raw variable (None when unset)."""

    torch_index: dict[int, int]
    setting: str | None
    note: str | None = None


def visible_map(setting: str | None, uuids: Sequence[str | None],
                device_order: str | None = None) -> VisibleMap:
    """Parse ``CUDA_VISIBLE_DEVICES`` the way the CUDA runtime does.

    Entries are indices or (prefixes of) GPU UUIDs; the first invalid entry ends the
    list (CUDA ignores it and everything after it), so ``0,7,1`` on a 2-GPU machine means
    GPU 0 only. ``uuids`` are NVML's, by NVML index.
    """
    n = len(uuids)
    if setting is None:
        note = None
        if n > 1 and (device_order or "FASTEST_FIRST") != "PCI_BUS_ID":
            note = ("CUDA_DEVICE_ORDER is not PCI_BUS_ID: on a machine with different GPU "
                    "models torch may number them differently from NVML (set "
                    "CUDA_DEVICE_ORDER=PCI_BUS_ID to make cuda:N = GPU N)")
        return VisibleMap({i: i for i in range(n)}, None, note)
    mapping: dict[int, int] = {}
    entries = [e.strip() for e in setting.split(",")] if setting.strip() else []
    for pos, entry in enumerate(entries):
        index = _resolve(entry, uuids)
        if index is None or index in mapping:
            rest = ",".join(entries[pos:])
            return VisibleMap(mapping, setting, f"CUDA_VISIBLE_DEVICES entry {entry!r} matches "
                              f"no GPU of this machine ({n} GPUs): CUDA ignores {rest!r}")
        mapping[index] = len(mapping)
    note = "CUDA_VISIBLE_DEVICES is empty: the job can see no GPU" if not entries else None
    return VisibleMap(mapping, setting, note)


def _resolve(entry: str, uuids: Sequence[str | None]) -> int | None:
    if not entry:
        return None
    if entry.lstrip("+-").isdigit():
        i = int(entry)
        return i if 0 <= i < len(uuids) else None
    if entry.startswith("GPU-"):
        hits = [i for i, u in enumerate(uuids) if u and u.startswith(entry)]
        return hits[0] if len(hits) == 1 else None
    return None  # MIG-... instances and anything else: not a whole GPU we sample
