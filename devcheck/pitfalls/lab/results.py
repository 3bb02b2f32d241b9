"""What a lab run produced and what it means: results, and the pure verdict over them."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from devcheck.facts import ToDict
from devcheck.pitfalls._base import Pitfall

Status = Literal["passed", "skipped", "failed"]


@dataclass(frozen=True)
class PhaseResult:
    """What one ``reproduce``/``fixed`` run did. ``raised`` is False when it returned."""

    phase: str
    device: str | None = None  # the device it actually ran on ("auto" resolved)
    device_name: str | None = None  # e.g. "NVIDIA H100 80GB HBM3", for the sweep's record
    raised: bool = False
    skipped: str | None = None
    exc_type: str | None = None
    message: str = ""
    traceback: str = ""
    value: str = ""  # what ``fixed`` reported on success
    output: str = ""  # tail of the child's stdout/stderr
    duration_s: float = 0.0
    timed_out: bool = False
    timeout_s: float | None = None  # the limit it overran, when ``timed_out``
    crashed: str | None = None  # the child died without a result (signal, exit code)

    @property
    def error_text(self) -> str:
        return f"{self.exc_type}: {self.message}" if self.exc_type else self.message


@dataclass(frozen=True)
class RunResult(ToDict):
    id: str
    device: str
    status: Status
    reason: str
    reproduce: PhaseResult | None = None
    fixed: PhaseResult | None = None
    duration_s: float = 0.0


def phase_from(data: dict[str, Any]) -> PhaseResult:
    """A :class:`PhaseResult` from the child's JSON (unknown keys ignored)."""
    fields = PhaseResult.__dataclass_fields__
    return PhaseResult(**{k: v for k, v in data.items() if k in fields})


def resolve(ref: str) -> Pitfall:
    """The pitfall named ``ref``: a registry id, or ``module:ATTRIBUTE`` for a Pitfall
    defined outside the registry (the seam tests use to run their own phases: a process
    probe, a phase that hangs). The CLI accepts registry ids only."""
    from devcheck import pitfalls

    if ":" not in ref:
        return pitfalls.get(ref)
    module, _, attr = ref.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise KeyError(f"no pitfall {ref!r}: {exc}") from None
    if not isinstance(found, Pitfall):
        raise KeyError(f"{ref!r} is a {type(found).__name__}, not a Pitfall")
    return found


def describe(phase: PhaseResult) -> str:
    """One line for a phase that ended badly (or the error it raised)."""
    if phase.timed_out:
        limit = phase.timeout_s if phase.timeout_s is not None else phase.duration_s
        return f"{phase.phase} timed out after {limit:g} s (the --timeout limit per phase)"
    if phase.crashed:
        return f"{phase.phase} crashed ({phase.crashed})"
    first = phase.message.strip().splitlines()[0] if phase.message.strip() else ""
    return f"{phase.exc_type}: {first[:200]}"


def verdict(pitfall: Pitfall, reproduce: PhaseResult,
            fixed: PhaseResult | None) -> tuple[Status, str]:
    """Pure: passed only when reproduce raised this pitfall's own symptom and fixed succeeded."""
    if reproduce.skipped:
        return "skipped", reproduce.skipped
    if not reproduce.raised:
        if reproduce.timed_out or reproduce.crashed:
            return "failed", describe(reproduce)
        return "failed", "reproduce did not fail: the pitfall did not happen here"
    if not pitfall.matches_symptom(reproduce.error_text):
        return "failed", f"reproduce raised {describe(reproduce)}, not this pitfall's symptom"
    if fixed is None:
        return "failed", "fixed was not run"
    if fixed.skipped:
        return "skipped", f"fixed: {fixed.skipped}"
    if fixed.raised or fixed.timed_out or fixed.crashed:
        return "failed", f"fixed failed: {describe(fixed)}"
    return "passed", f"reproduced {describe(reproduce)}; fixed: {fixed.value or 'ok'}"
