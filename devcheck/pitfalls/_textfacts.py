"""Facts a pasted error states about its own machine: driver, GPU, visible devices, memory.

``explain`` reads these from the text (never from this machine) so the advice fits the
machine the error came from: "found version 9000" is a driver that supports CUDA 9.0,
"sm_120" is a Blackwell GPU, ``CUDA_VISIBLE_DEVICES='1'`` explains "No CUDA GPUs are
available" on a one-GPU box, ``cuda:0`` and ``cuda:1`` in one message are two GPUs.

Pure text work with bounded state: :class:`FactCollector` is fed window after window
(the input is streamed) and keeps at most a few values of each kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from devcheck.facts import ToDict

_KEEP = 8  # values kept per kind: enough to explain, bounded for any input

_DRIVER_FOUND = re.compile(r"too old \(found version (\d{4,6})\)", re.I)
_SMI_CUDA = re.compile(r"Driver Version:\s*([\d.]+)\s+CUDA Version:\s*(\d{1,2}\.\d)", re.I)
_SM = re.compile(r"\bsm_(\d{2,3})[a-z]?\b", re.I)
_CC = re.compile(r"(?:compute|cuda) capability(?: \(CC\))? (\d{1,2})\.(\d)", re.I)
_SUPPORTS = re.compile(r"supports CUDA capabilities((?: sm_\d{2,3}[a-z]?)+)", re.I)
_GPU_NAME = re.compile(r"\b(NVIDIA [A-Za-z][\w -]{2,40}?|(?:GeForce|Quadro|Tesla|TITAN) "
                       r"[\w -]{2,30}?)(?= with CUDA capability| which is of|\s*\(|\s*$|,|\n)",
                       re.M)
_VISIBLE = re.compile(r"CUDA_VISIBLE_DEVICES['\"]?\]?\s*(?:=|:)\s*['\"]?([-\w,]{0,40})", re.I)
_ORDINAL = re.compile(r"\b(cuda|mps|xpu):(\d{1,2})\b", re.I)
_OOM_TRIED = re.compile(r"Tried to allocate ([\d.]+ [KMGT]i?B)", re.I)
_OOM_TOTAL = re.compile(r"(?:GPU (\d+) has a total capac\w* of|\(GPU (\d+); )\s*([\d.]+ [KMGT]i?B)",
                        re.I)
_OOM_FREE = re.compile(r"of which ([\d.]+ (?:[KMGT]i?B|bytes)) is free|([\d.]+ [KMGT]i?B) free;",
                       re.I)
_OOM_UNALLOC = re.compile(r"([\d.]+ (?:[KMGT]i?B|bytes)) is reserved by PyTorch but unallocated",
                          re.I)
_OOM_BY_TORCH = re.compile(r"([\d.]+ (?:[KMGT]i?B|bytes)) is allocated by PyTorch|"
                           r"([\d.]+ [KMGT]i?B) already allocated", re.I)
_OOM_PROCESS = re.compile(r"Process (\d+) has ([\d.]+ [KMGT]i?B) memory in use", re.I)
_OOM_THIS = re.compile(r"this process has ([\d.]+ [KMGT]i?B) memory in use", re.I)


@dataclass(frozen=True)
class TextFacts(ToDict):
    """What the pasted text says about the machine it came from (``None``/empty: not said).

    Memory sizes are kept as printed ("14.52 GiB"), since they are only quoted back.
    """

    driver_cuda: str | None = None  # "9.0" from "found version 9000"
    sms: tuple[str, ...] = ()  # "sm_120", "sm_61" (GPU architectures named)
    supported_sms: tuple[str, ...] = ()  # the wheel's list, from the compatibility warning
    gpu_names: tuple[str, ...] = ()
    visible_devices: str | None = None  # the CUDA_VISIBLE_DEVICES value seen in the text
    devices: tuple[str, ...] = ()  # "cuda:0", "cuda:1", in order of appearance
    os_hint: str | None = None  # "windows" | "macos" | "linux"
    oom: dict[str, str] = field(default_factory=dict)  # tried, total, free, ... (as printed)
    oom_processes: tuple[tuple[str, str], ...] = ()  # (pid, memory) other processes named


class _Plain:
    """Positions of a literal by plain scans (when no shared finder is given)."""

    def __init__(self, low: str) -> None:
        self.low = low

    def all(self, literal: str, cap: int) -> list[int]:
        out: list[int] = []
        pos = self.low.find(literal)
        while pos != -1 and len(out) < cap:
            out.append(pos)
            pos = self.low.find(literal, pos + 1)
        return out


def _around(text: str, find: Any, anchor: str, rx: re.Pattern[str],
            cap: int = 64) -> list[re.Match[str]]:
    """Matches of ``rx`` in short spans around each occurrence of ``anchor`` (bounded)."""
    found: list[re.Match[str]] = []
    end = -1
    for pos in find.all(anchor, cap):
        if pos < end:
            continue
        m = rx.search(text, max(end, pos - 200), pos + len(anchor) + 300)
        if m and m.start() >= end:
            found.append(m)
            end = m.end()
    return found


def _add(seq: list[str], value: str) -> None:
    if value not in seq and len(seq) < _KEEP:
        seq.append(value)


class FactCollector:
    """Accumulates :class:`TextFacts` over the windows of a streamed input (bounded)."""

    def __init__(self) -> None:
        self.driver_cuda: str | None = None
        self.sms: list[str] = []
        self.supported: list[str] = []
        self.names: list[str] = []
        self.visible: str | None = None
        self.devices: list[str] = []
        self.os_votes = {"windows": 0, "macos": 0, "linux": 0}
        self.oom: dict[str, str] = {}
        self.procs: list[tuple[str, str]] = []

    def feed(self, text: str, low: str | None = None, find: Any = None) -> None:
        """Read one window (normalised text); later windows refine earlier ones.

        Each pattern runs only on a short span around a literal anchor found with
        ``str.find``, so a window costs a few C-speed scans whatever it contains.
        """
        low = text.lower() if low is None else low
        find = _Plain(low) if find is None else find
        for m in _around(text, find, "found version", _DRIVER_FOUND):
            v = int(m.group(1))
            self.driver_cuda = f"{v // 1000}.{(v % 1000) // 10}"
        for m in _around(text, find, "cuda version:", _SMI_CUDA):
            self.driver_cuda = self.driver_cuda or m.group(2)
        supported_span = []
        for m in _around(text, find, "supports cuda capabilities", _SUPPORTS):
            supported_span.append((m.start(), m.end()))
            for sm in m.group(1).split():
                _add(self.supported, sm.lower())
        for m in _around(text, find, "sm_", _SM):
            if not any(a <= m.start() < b for a, b in supported_span):
                _add(self.sms, f"sm_{m.group(1)}")
        for m in _around(text, find, "capability", _CC):
            _add(self.sms, f"sm_{m.group(1)}{m.group(2)}")
        for anchor in ("nvidia ", "geforce", "tesla ", "quadro", "titan "):
            for m in _around(text, find, anchor, _GPU_NAME):
                _add(self.names, m.group(1).strip())
        for m in _around(text, find, "cuda_visible_devices", _VISIBLE):
            self.visible = m.group(1).strip() or self.visible
        for anchor in ("cuda:", "mps:", "xpu:"):
            for m in _around(text, find, anchor, _ORDINAL):
                _add(self.devices, f"{m.group(1).lower()}:{m.group(2)}")
        if "memory" in low:
            self._feed_oom(text, find)
        self.os_votes["windows"] += low.count(":\\") + low.count("\\site-packages\\")
        self.os_votes["macos"] += low.count("/users/") + low.count("darwin")
        self.os_votes["linux"] += low.count("/home/") + low.count("/usr/lib/") + low.count(
            "/opt/conda/")

    def _feed_oom(self, text: str, find: Any) -> None:
        for key, anchor, rx in (("tried", "tried to allocate", _OOM_TRIED),
                                ("unallocated", "but unallocated", _OOM_UNALLOC),
                                ("this_process", "this process has", _OOM_THIS)):
            for m in _around(text, find, anchor, rx):
                self.oom[key] = m.group(1)
        for anchor in ("total capac", "total capacity"):
            for m in _around(text, find, anchor, _OOM_TOTAL):
                self.oom["gpu"] = m.group(1) or m.group(2)
                self.oom["total"] = m.group(3)
        for m in _around(text, find, "free", _OOM_FREE):
            self.oom["free"] = m.group(1) or m.group(2)
        for m in _around(text, find, "allocated", _OOM_BY_TORCH):
            self.oom["allocated"] = m.group(1) or m.group(2)
        for m in _around(text, find, "memory in use", _OOM_PROCESS):
            if (m.group(1), m.group(2)) not in self.procs and len(self.procs) < _KEEP:
                self.procs.append((m.group(1), m.group(2)))

    def facts(self) -> TextFacts:
        votes = max(self.os_votes.items(), key=lambda kv: kv[1])
        return TextFacts(
            driver_cuda=self.driver_cuda, sms=tuple(self.sms),
            supported_sms=tuple(self.supported), gpu_names=tuple(self.names),
            visible_devices=self.visible, devices=tuple(self.devices),
            os_hint=votes[0] if votes[1] else None, oom=dict(self.oom),
            oom_processes=tuple(self.procs))


def size_bytes(text: str | None) -> float | None:
    """"14.52 GiB" -> bytes (for comparisons only); None when unparseable."""
    if not text:
        return None
    m = re.match(r"([\d.]+) ?([KMGT]?)i?B|([\d.]+) bytes", text.strip())
    if not m:
        return None
    if m.group(3):
        return float(m.group(3))
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2)]
    try:
        return float(m.group(1)) * scale
    except ValueError:
        return None
