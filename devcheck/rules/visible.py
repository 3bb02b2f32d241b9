"""CUDA_VISIBLE_DEVICES read by torch's own rules: which GPUs torch will see, and why not.

A rule module of :mod:`devcheck.rules` (pure: facts in, findings out). torch parses the
variable itself (``_parse_visible_devices`` and ``_transform_uuid_to_ordinals`` in
torch/cuda/__init__.py, mirroring the CUDA runtime); every quirk of that parser ("0,0" hides
every GPU, "1gpu" reads as 1, a UUID after an index ends the list) is a way for a user to
lose a GPU without an error, so each is mirrored here and said in words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from devcheck.facts import DoctorFacts, Finding, GpuFacts, Severity


@dataclass(frozen=True)
class Visible:
    """What CUDA makes of CUDA_VISIBLE_DEVICES, by torch's rules (``_parse_visible_devices``
    and ``_transform_uuid_to_ordinals`` in torch/cuda/__init__.py, which mirror the runtime)."""

    entries: tuple[str, ...] = ()  # the GPUs torch sees, in order (indices or UUID prefixes)
    stop: str | None = None  # why CUDA stopped reading early: the entries after it are ignored
    repeated: str | None = None  # a GPU listed twice: CUDA then sees no GPU at all
    notes: tuple[str, ...] = ()  # entries read otherwise than written ("0abc" reads as 0)


_LEADING_NUMBER = re.compile(r"[+-]?[0-9]+")


def _parse_visible(value: str, facts: DoctorFacts) -> Visible:
    """Indices: each entry's leading number (C's strtoul: "1gpu" is 1); a negative or
    non-numeric entry stops the list; a repeated index empties it; then the list ends at the
    first index NVML does not have. A value starting with GPU-/MIG- is a list of UUID
    prefixes instead (entries compared as written, spaces included)."""
    gpus = facts.nvml.gpus if facts.nvml.available else ()
    if value.startswith(("GPU-", "MIG-")):
        return _parse_uuids(value, gpus)
    numbers: list[int] = []
    notes: list[str] = []
    stop = None
    for raw in value.split(","):
        entry = raw.strip()
        match = _LEADING_NUMBER.match(entry)
        number = int(match.group()) if match else None
        if number is not None and number in numbers:
            return Visible(repeated=f"{entry!r} names GPU {number} a second time")
        if number is None or number < 0:
            stop = ("an empty entry" if not entry else
                    f"{entry!r} is negative" if number is not None else
                    f"{entry!r} is a UUID after an index (a list takes indices or UUIDs, not "
                    "both)" if entry.startswith(("GPU-", "MIG-")) else
                    f"{entry!r} is not a GPU index or UUID")
            break
        if match and match.end() < len(entry):
            notes.append(f"{entry!r} reads as {number} (CUDA takes an entry's leading digits "
                         "and ignores the rest)")
        numbers.append(number)
    for i, number in enumerate(numbers):
        if gpus and number >= len(gpus):
            return Visible(tuple(map(str, numbers[:i])),
                           f"index {number} does not exist (NVML sees {len(gpus)} GPU(s): "
                           f"0..{len(gpus) - 1})", notes=tuple(notes))
    return Visible(tuple(map(str, numbers)), stop, notes=tuple(notes))


def _parse_uuids(value: str, gpus: tuple[GpuFacts, ...]) -> Visible:
    prefix = value[:4]
    kept: list[str] = []
    stop = None
    for entry in value.split(","):
        if entry in kept:
            return Visible(repeated=f"{entry!r} is listed twice")
        if not entry.startswith(prefix):
            stop = ("an empty entry" if not entry else
                    f"{entry!r} does not start with {prefix!r}"
                    + (" (CUDA compares entries as written: no spaces)"
                       if entry.strip().startswith(prefix) else
                       " (a list that starts with a UUID takes only UUIDs)"))
            break
        kept.append(entry)
    if prefix == "MIG-" or not gpus:  # MIG UUIDs are not in NVML's GPU list (torch skips too)
        return Visible(tuple(kept), stop)
    ordinals: list[int] = []
    for i, entry in enumerate(kept):
        matches = [g.index for g in gpus if (g.uuid or "").startswith(entry)]
        if len(matches) != 1:
            return Visible(tuple(kept[:i]), f"no GPU has a UUID starting with {entry!r}"
                           if not matches else f"{entry!r} is ambiguous: it starts the UUIDs "
                           f"of GPUs {', '.join(map(str, matches))}")
        if matches[0] in ordinals:
            return Visible(repeated=f"{entry!r} names GPU {matches[0]} a second time")
        ordinals.append(matches[0])
    return Visible(tuple(kept), stop)


def rule_cuda_visible_devices(facts: DoctorFacts) -> list[Finding]:
    value = facts.host.env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return []
    v = _parse_visible(value, facts)
    total = len(facts.nvml.gpus)
    shown = f"CUDA_VISIBLE_DEVICES={value!r}"
    fix = ("set it to indices that exist (e.g. CUDA_VISIBLE_DEVICES=0,1) or unset it, before "
           "Python starts; torch renumbers the visible GPUs from cuda:0")
    severity: Severity = "warn" if total else "info"
    if v.repeated:
        return [Finding("cuda_visible_devices", severity, f"{shown} hides every GPU from torch",
                        f"{v.repeated}: a repeated entry hides every GPU (CUDA, and torch with "
                        f"it, then sees no GPU at all, not that GPU once); NVML sees {total} "
                        "GPU(s)",
                        "list each GPU once (e.g. CUDA_VISIBLE_DEVICES=0,1) or unset it, before "
                        "Python starts", "invalid_device_ordinal")]
    visible, n = v.entries, len(v.entries)
    if not visible:
        problem = v.stop
        first = value.split(",")[0].strip()
        if first in ("", "-1"):  # the usual ways to hide the GPUs on purpose
            problem = (f"{first or 'an empty value'} hides every GPU (CUDA reads entries up to "
                       "the first one that is not a GPU)")
        return [Finding("cuda_visible_devices", severity,
                        f"{shown} hides every GPU from torch",
                        f"{problem or 'no valid entry'}; NVML sees {total} GPU(s)", fix,
                        "invalid_device_ordinal")]
    if v.stop or v.notes:
        said = list(v.notes) + ([f"{v.stop}; CUDA stops reading there"] if v.stop else [])
        return [Finding("cuda_visible_devices", "warn" if v.stop else "info",
                        f"{shown} is malformed",
                        f"{'; '.join(said)}, so {'only ' if v.stop else ''}{', '.join(visible)} "
                        f"{'is' if n == 1 else 'are'} visible (as cuda:0..cuda:{n - 1})", fix,
                        "invalid_device_ordinal")]
    if total and n < total:
        return [Finding("cuda_visible_devices", "info",
                        f"{shown} shows {n} of {total} GPUs",
                        f"torch sees them as cuda:0..cuda:{n - 1}; other indices raise "
                        "'invalid device ordinal'", None, "invalid_device_ordinal")]
    return []
