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
class Fix:
    """One way out, best first in a pitfall's list: a title a person reads and code to paste.

    ``code`` may use the ``{device}`` placeholder; it is filled with the device the error
    names (``cuda``/``mps``) before anyone sees it.
    """

    title: str
    code: str


@dataclass(frozen=True)
class Symptom:
    """One known form of the error text.

    ``anchor`` is a lowercase literal that must occur for ``pattern`` to be tried: the
    matcher looks for anchors with ``str.find`` (linear) and runs the regex only on a
    window around each hit, so a 10 MB log costs one pass per anchor. ``example`` is a
    real message of this form (tests use it; a cut message is matched as its prefix).
    ``requires`` is a lowercase literal that must also appear somewhere in the text (e.g.
    ``cuda_visible_devices``: "No CUDA GPUs are available" means a hidden GPU only when the
    variable is in sight). A form whose cause differs from the pitfall's usual one (the
    reverse generator message, two GPUs instead of GPU + CPU) carries its own
    ``mechanism`` and ``fixes``, which replace the pitfall's when this form matched.
    """

    pattern: str
    anchor: str
    example: str
    weight: float = 0.9
    variant: str = ""
    requires: str = ""
    mechanism: str = ""
    fixes: tuple[Fix, ...] = ()

    def compiled(self) -> re.Pattern[str]:
        return _compile(self.pattern)

    def found_in(self, text: str, low: str) -> bool:
        """Whole-text check (the lab's verdict, short texts); explain uses windows."""
        if self.requires and self.requires not in low:
            return False
        return self.anchor in low and self.compiled().search(text) is not None


_CACHE: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    rx = _CACHE.get(pattern)
    if rx is None:
        rx = _CACHE[pattern] = re.compile(pattern, re.IGNORECASE)
    return rx


# The old CUDA wordings carry only the runtime's error number: "cuda runtime error (2)",
# "THCudaCheck FAIL file=... error=77", "CUDA error (10)", "(35 vs. 0)", "code=35(cudaError".
CUDA_CODE_ANCHORS = ("cuda runtime error", "thcudacheck fail", "cuda error (", "vs. 0)",
                     "(cudaerror")
_CUDA_CODE = re.compile(
    r"(?:cuda runtime error\s{0,3}\(\s{0,3}|thcudacheck fail\b[^\n]{0,400}?\berror=|"
    r"cuda error\s{0,3}\(\s{0,3})(\d{1,3})\b|cudaSuccess\s{0,3}\((\d{1,3}) vs\. 0\)|"
    r"\bcode=(\d{1,3})\s{0,3}\(cudaError", re.IGNORECASE)


def cuda_error_codes(text: str) -> list[tuple[int, int]]:
    """(cudaError number, offset) for each old-style CUDA error in ``text``.

    The number is the CUDA runtime's ``cudaError_t``: CUDA <= 10.0 and later releases use
    different values for some errors (invalid device function 8 -> 98, no device 38 -> 100,
    illegal address 77 -> 700, assert 59 -> 710, unknown 30 -> 999), so pitfalls list both.
    """
    return [(int(next(g for g in m.groups() if g)), m.start())
            for m in _CUDA_CODE.finditer(text)]


def fill(text: str, device: str) -> str:
    """Replace the ``{device}`` placeholder: pitfall texts name the accelerator in the
    error (``cuda``, ``mps``), defaulting to ``cuda`` where none is known."""
    return text.replace("{device}", device)


@dataclass(frozen=True)
class Pitfall:
    """A device pitfall: how to recognise it, why it happens, how to fix it, and proof.

    ``needs`` lists the device kinds (``cpu``/``cuda``/``mps``) the reproduction runs on,
    best first, plus requirements (``multi-gpu``, ``fork``, ``root``). ``frames`` are
    source-file suffixes whose presence in a traceback is evidence even when the message
    is cut; ``hints`` are literal words that tip a tie between pitfalls sharing a message.
    ``cuda_errors`` are the CUDA runtime error numbers that mean this pitfall in the old
    wordings. ``yields_to`` pairs a literal (a torch frame) with the pitfall that is the
    real cause when the literal is in the traceback: a numpy error raised *inside* torch's
    sampler is the default-device pitfall, not a ``.cpu()`` the user forgot.
    ``precondition(device)`` runs in the lab's child (torch loaded) and raises ``Skip``
    when this machine cannot show the pitfall.

    Texts (title, mechanism, fixes, warnings) may say ``{device}``: the fields hold them
    filled for ``cuda``, so nothing shows a raw placeholder; ``texts(device)`` fills them
    for the device an error names.
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
    cuda_errors: tuple[int, ...] = ()
    yields_to: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        templates = (self.title, self.mechanism, self.fixes, self.warnings)
        object.__setattr__(self, "_templates", templates)
        title, mechanism, fixes, warnings = self._filled(templates, "cuda")
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "mechanism", mechanism)
        object.__setattr__(self, "fixes", fixes)
        object.__setattr__(self, "warnings", warnings)

    @staticmethod
    def _filled(templates: tuple[str, str, tuple[Fix, ...], tuple[str, ...]],
                device: str) -> tuple[str, str, tuple[Fix, ...], tuple[str, ...]]:
        title, mechanism, fixes, warnings = templates
        return (fill(title, device), fill(mechanism, device),
                tuple(Fix(fill(f.title, device), fill(f.code, device)) for f in fixes),
                tuple(fill(w, device) for w in warnings))

    def texts(self, device: str, symptom: Symptom | None = None
              ) -> tuple[str, tuple[Fix, ...], tuple[str, ...]]:
        """(mechanism, fixes, warnings) for an error on ``device`` in ``symptom``'s form."""
        title, mechanism, fixes, warnings = self._templates  # type: ignore[attr-defined]
        if symptom is not None and symptom.mechanism:
            mechanism = symptom.mechanism
        if symptom is not None and symptom.fixes:
            fixes = symptom.fixes
        _, mech, fx, warn = self._filled((title, mechanism, fixes, warnings), device)
        return mech, fx, warn

    @property
    def device_kinds(self) -> tuple[str, ...]:
        return tuple(n for n in self.needs if n in DEVICE_KINDS)

    @property
    def source_label(self) -> str:
        """"Where in torch" only when the source really is torch's (not matplotlib's)."""
        first = self.source.lstrip().split(" ", 1)[0].lower()
        torch_own = first.startswith(("torch/", "aten/", "c10/", "torch.", "c10d"))
        return "Where in torch" if torch_own else "Where"

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
        if any(s.found_in(text, low) for s in self.symptoms):
            return True
        return bool(self.cuda_errors) and any(
            code in self.cuda_errors for code, _ in cuda_error_codes(text))

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
            "source_label": self.source_label,
            "fixes": [{"title": f.title, "code": f.code.strip()} for f in self.fixes],
            "warnings": list(self.warnings),
            "frames": list(self.frames),
            "cuda_errors": list(self.cuda_errors),
            "cpu_note": self.cpu_note,
            "reproduce_command": f"devcheck pitfalls run {self.id}",
        }


def accelerator(device: str) -> str:
    """The accelerator a reproduction should use: ``device`` unless that is the CPU."""
    if device.split(":")[0] in ("cuda", "mps"):
        return device
    raise Skip(f"needs an accelerator (cuda or mps); this run uses --device {device}")
