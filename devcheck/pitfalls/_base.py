"""The shape of a pitfall: data for the matcher, and two small programs for the lab.

A pitfall module must stay importable without torch (``devcheck explain`` and
``devcheck pitfalls list`` never load it), so ``reproduce``/``fixed`` import torch inside.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Device kinds a reproduction can run on, plus extra requirements.
DEVICE_KINDS = ("cpu", "cuda", "mps")
REQUIREMENTS = ("multi-gpu", "fork", "root")


class Skip(Exception):
    """Raised by a precondition or reproduction: this machine cannot show the pitfall.

    The message says what is missing, e.g. "a driver is installed here, so
    'Found no NVIDIA driver' cannot happen"; the lab reports it as ``skipped``.
    """


@dataclass(frozen=True)
class Symptom:
    """One known form of the error text.

    ``anchor`` is a lowercase literal that must occur for ``pattern`` to be tried: the
    matcher looks for anchors with ``str.find`` (linear) and runs the regex only on a
    window around each hit, so a 10 MB log costs one pass per anchor. ``example`` is a
    real message of this form (tests use it; a cut message is matched as its prefix).
    """

    pattern: str
    anchor: str
    example: str
    weight: float = 0.9
    variant: str = ""

    def compiled(self) -> re.Pattern[str]:
        return _compile(self.pattern)


_CACHE: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    rx = _CACHE.get(pattern)
    if rx is None:
        rx = _CACHE[pattern] = re.compile(pattern, re.IGNORECASE)
    return rx


@dataclass(frozen=True)
class Fix:
    title: str
    code: str


@dataclass(frozen=True)
class Pitfall:
    """A device pitfall: how to recognise it, why it happens, how to fix it, and proof.

    ``needs`` lists the device kinds (``cpu``/``cuda``/``mps``) the reproduction runs on,
    best first, plus requirements (``multi-gpu``, ``fork``, ``root``). ``frames`` are
    source-file suffixes whose presence in a traceback is evidence even when the message
    is cut; ``hints`` are literal words that tip a tie between pitfalls sharing a message.
    ``precondition(device)`` runs in the lab's child (torch loaded) and raises ``Skip``
    when this machine cannot show the pitfall.
    """

    id: str
    title: str
    needs: tuple[str, ...]
    symptoms: tuple[Symptom, ...]
    mechanism: str
    source: str
    fixes: tuple[Fix, ...]
    reproduce: Callable[[str], Any]
    fixed: Callable[[str], Any]
    frames: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    precondition: Callable[[str], None] | None = None
    cpu_note: str = ""
    related: tuple[str, ...] = field(default=())

    @property
    def device_kinds(self) -> tuple[str, ...]:
        return tuple(n for n in self.needs if n in DEVICE_KINDS)

    @property
    def fix_text(self) -> str:
        return "\n".join(f"{i}. {f.title}" for i, f in enumerate(self.fixes, 1))

    @property
    def fix_code(self) -> str:
        parts = (f"# {i}. {f.title}\n{f.code.strip()}" for i, f in enumerate(self.fixes, 1))
        return "\n\n".join(parts)

    def matches_symptom(self, text: str) -> bool:
        """Does ``text`` (an error message or traceback) show one of this pitfall's forms?"""
        low = text.lower()
        return any(s.anchor in low and s.compiled().search(text) for s in self.symptoms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "needs": list(self.needs),
            "symptoms": [
                {"pattern": s.pattern, "example": s.example, "variant": s.variant}
                for s in self.symptoms
            ],
            "mechanism": self.mechanism,
            "source": self.source,
            "fixes": [{"title": f.title, "code": f.code.strip()} for f in self.fixes],
            "warnings": list(self.warnings),
            "frames": list(self.frames),
            "cpu_note": self.cpu_note,
            "reproduce_command": f"devcheck pitfalls run {self.id}",
        }


def cuda_problem() -> str | None:
    """Why CUDA is unusable in this process (None when it works). Call only in a lab child."""
    import torch

    if torch.version.cuda is None:
        return f"this torch build is CPU-only ({torch.__version__})"
    try:
        if torch.cuda.device_count() > 0 and torch.cuda.is_available():
            return None
        torch.cuda.init()
    except Exception as exc:  # the driver's own words are the best reason
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"CUDA unusable: {first.split('. ')[0]}"
    return "CUDA unusable: torch.cuda.is_available() is False"


def mps_problem() -> str | None:
    import torch

    if not torch.backends.mps.is_built():
        return "this torch build has no MPS support (Apple silicon only)"
    if not torch.backends.mps.is_available():
        return "MPS is not available on this machine (needs macOS 12.3+ on Apple silicon)"
    return None


def accelerator(device: str) -> str:
    """The accelerator a reproduction should use: ``device`` unless that is the CPU."""
    if device.split(":")[0] in ("cuda", "mps"):
        return device
    raise Skip(f"needs an accelerator (cuda or mps); this run uses --device {device}")
