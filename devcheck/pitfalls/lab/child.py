"""What runs in the lab's child: pick the device, check the precondition, run one phase.

Torch is loaded here (forked from the zygote, or imported by a fresh interpreter). Device
questions go through :mod:`devcheck.probe.devices` and the choice through the pure
:func:`devcheck.rules.pitfalls.choose_device`, so a run is skipped for the reason the
doctor gives ("no NVIDIA driver (NVML library not found: ...)"), never a reason of its own.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from typing import Any

from devcheck.pitfalls._base import Pitfall, Skip
from devcheck.pitfalls.lab.results import resolve
from devcheck.probe import devices
from devcheck.rules.pitfalls import choose_device, kinds_to_ask

MAX_TEXT = 20_000  # per message/traceback/value: a result line stays small


def device_problems(kinds: tuple[str, ...]) -> tuple[dict[str, str | None], int]:
    """For each accelerator kind asked, why torch cannot use it here (None: it can), and
    how many CUDA devices it can use; one availability query, none for an empty ``kinds``."""
    if not kinds:
        return {}, 0
    avail = devices.availability()
    cuda = [d for d in avail.usable if d.startswith("cuda")]
    problems: dict[str, str | None] = {
        "cuda": None if cuda else (avail.cuda_reason or "torch sees no CUDA device"),
        "mps": None if "mps" in avail.usable else (avail.mps_reason or "MPS is not usable"),
    }
    return {k: problems[k] for k in kinds}, len(cuda)


def resolve_device(pitfall: Pitfall, requested: str) -> str:
    """The device this pitfall runs on, or ``Skip`` with the reason it cannot run here."""
    kinds = pitfall.device_kinds
    problems, cuda_count = device_problems(kinds_to_ask(kinds, requested))
    device, why = choose_device(
        kinds, pitfall.needs, requested, problems=problems, cuda_count=cuda_count,
        fork_available="fork" in multiprocessing.get_all_start_methods())
    if device is None:
        raise Skip(why)
    return device


def device_name(device: str) -> str | None:
    """The hardware behind ``device``, for the sweep's record."""
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        return devices.cuda_device_name(index)
    return "Apple MPS" if device.startswith("mps") else None


def run_phase_here(pitfall_ref: str, phase: str, device: str) -> dict[str, Any]:
    """Run one phase in *this* process (the lab's child) and describe the outcome.

    Anything the phase raises is the result (that is the point of a reproduction); the
    dictionary is what the zygote sends back as one JSON line.
    """
    start = time.perf_counter()
    out: dict[str, Any] = {"phase": phase}
    try:
        pitfall = resolve(pitfall_ref)
        resolved = resolve_device(pitfall, device)
        out["device"] = resolved
        out["device_name"] = device_name(resolved)
        if pitfall.precondition is not None:
            pitfall.precondition(resolved)
        fn = pitfall.reproduce if phase == "reproduce" else pitfall.fixed
        value = fn(resolved)
        out["value"] = "" if value is None else str(value)[:MAX_TEXT]
    except Skip as exc:
        out["skipped"] = str(exc)
    except BaseException as exc:  # the point of a reproduction is to catch anything
        out["raised"] = True
        out["exc_type"] = type(exc).__qualname__
        out["message"] = str(exc)[:MAX_TEXT]
        out["traceback"] = "".join(traceback.format_exception(exc))[-MAX_TEXT:]
    out["duration_s"] = round(time.perf_counter() - start, 4)
    return out
