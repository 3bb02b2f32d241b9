"""What a lab run produced and what it means: results, and the pure verdict over them."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from devcheck.facts import ToDict, printable
from devcheck.pitfalls._base import Pitfall
from devcheck.probe.torchproc import exit_text

Status = Literal["passed", "skipped", "failed"]
LAB_COMMAND = "python -m devcheck.pitfalls.lab --serve"
# what the lab process is doing after it says {"stage": KEY} (see the zygote's protocol)
START_STAGES = {"torch": "importing torch", "lab": "importing devcheck's pitfall modules"}
_MAX_WORDS = 300  # characters of an error or of the last words kept in the one line


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


def lab_lost(returncode: int | None) -> str:
    """Pure: the lab process ended with ``returncode`` (None: it stopped answering and was
    killed) while a phase ran; the parent killed the phase's processes."""
    how = ("stopped answering" if returncode is None
           else exit_text(returncode, before_reporting=False))
    hint = (" (SIGKILL: often the kernel's out-of-memory killer, see `dmesg`)"
            if returncode == -9 else "")
    return (f"the lab process ({LAB_COMMAND}) {how} during this phase{hint}; it and the "
            "phase's processes were killed")


def start_failure(stage: str | None, *, raised: str | None = None,
                  returncode: int | None = None, timeout_s: float | None = None,
                  margin_s: float = 0.0, last_words: str = "") -> str:
    """Pure: why the lab process did not start, in one printable line: how it ended (an
    exception it reported, an exit code or signal, or, given ``timeout_s``, killed after
    the phase's timeout plus ``margin_s``), the step it was in (the last ``stage`` it
    said, None before the first) and the fix."""
    doing = START_STAGES.get(stage or "")
    where = f"while {doing}" if doing else "before importing torch"
    if raised is not None:
        how = f"{doing or 'starting'} raised {raised[:_MAX_WORDS]}"
    elif timeout_s is not None:
        how = (f"it timed out after {timeout_s + margin_s:g} s {where} (the --timeout limit "
               f"per phase, {timeout_s:g} s, plus {margin_s:g} s to start)")
    else:
        how = f"it {exit_text(returncode, before_reporting=False)} {where}"
    if last_words and raised is None:
        how += f" (its last words: {last_words[-_MAX_WORDS:]})"
    if stage == "torch" and timeout_s is not None:
        fix = ("a larger --timeout gives a slow torch more time; `devcheck doctor` "
               "explains a broken one")
    elif stage == "torch":
        fix = "`devcheck doctor` explains a broken torch"
    else:
        fix = f"`{LAB_COMMAND}` run by hand shows what goes wrong"
    return printable(f"the lab process ({LAB_COMMAND}) failed to start: {how}; {fix}")
