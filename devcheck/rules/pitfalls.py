"""Rules for the pitfall lab: can this machine show a pitfall, and on which device?

Pure functions over facts the probes gathered (``devcheck.probe.devices``): no torch, no
I/O. ``pitfalls list`` and ``explain`` use the cheap :class:`MachineFacts`; the lab's child
uses :func:`choose_device` with the doctor's availability answer, so a run is skipped for
the same reason ``devcheck doctor`` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devcheck.pitfalls import Pitfall
    from devcheck.probe.devices import MachineFacts

Blocker = Callable[["MachineFacts"], "str | None"]

# Pitfalls this machine can never show whatever the device, and why (checked before torch).
_STATIC: dict[str, Blocker] = {
    "cpu_only_wheel": lambda m: "this torch build has CUDA" if m.cuda_build else None,
    "no_driver": lambda m: ("an NVIDIA driver is installed" if m.driver else
                            None if m.cuda_build else "this torch build is CPU-only"),
    "driver_too_old": lambda m: None if m.driver and m.cuda_build else
    "needs an NVIDIA driver and a CUDA build",
    "dataloader_shm_exhausted": lambda m: None if m.linux else "needs Linux",
}

# Pitfalls whose advice depends on the machine reading the explanation.
MACHINE_DEPENDENT = frozenset({
    "gpu_checkpoint_on_cpu", "no_driver", "cpu_only_wheel", "driver_too_old",
    "invalid_device_ordinal", "pin_memory_without_accelerator", "cuda_available_but_unused",
    "gpu_arch_not_in_wheel"})


def reproducible_here(pitfall: Pitfall, machine: MachineFacts) -> tuple[bool, str]:
    """A quick answer for ``list``; ``run`` decides for real (in a child with torch)."""
    if not machine.torch_installed:
        return False, "torch is not installed"
    kinds = [k for k in pitfall.device_kinds
             if k == "cpu" or (k == "cuda" and machine.cuda_build and machine.driver)
             or (k == "mps" and machine.mps_capable)]
    if not kinds:
        return False, "needs " + " or ".join(pitfall.device_kinds)
    for need, have in (("fork", machine.fork), ("root", machine.root)):
        if need in pitfall.needs and not have:
            return False, f"needs {need}"
    blocker = _STATIC.get(pitfall.id, lambda m: None)(machine)
    if blocker:
        return False, blocker
    if pitfall.precondition is not None:
        return True, f"on {'/'.join(kinds)}, if this machine fits (checked when run)"
    return True, f"on {'/'.join(kinds)}"


def machine_context(pitfall_id: str, machine: MachineFacts) -> str | None:
    """One line of this machine's facts under an explanation whose advice depends on them."""
    if pitfall_id not in MACHINE_DEPENDENT:
        return None
    if not machine.torch_installed:
        return "torch is not installed in this environment"
    build = f"torch built with CUDA {machine.cuda_build}" if machine.cuda_build else \
        "a CPU-only torch build (reinstall from a cuXXX index to use a GPU)"
    driver = "an NVIDIA driver is installed" if machine.driver else \
        "no NVIDIA driver (so no CUDA here: load checkpoints with map_location='cpu')"
    return f"{build}; {driver}. Full check: devcheck doctor"


# ------------------------------------------------------------ the lab: which device


def kinds_to_ask(kinds: Sequence[str], requested: str) -> tuple[str, ...]:
    """The accelerator kinds whose availability decides a run (the child asks only these:
    a CPU run never pays for a CUDA query)."""
    if requested == "auto":
        return tuple(k for k in ("cuda", "mps") if k in kinds)
    kind = requested.split(":")[0]
    return (kind,) if kind in kinds and kind != "cpu" else ()


def choose_device(kinds: Sequence[str], needs: Sequence[str], requested: str, *,
                  problems: Mapping[str, str | None], cuda_count: int,
                  fork_available: bool) -> tuple[str | None, str | None]:
    """``(device, None)`` to run on, or ``(None, why)`` when this machine cannot.

    ``kinds`` are the pitfall's device kinds, best first; ``problems`` maps each kind of
    :func:`kinds_to_ask` to why it is unusable (None: usable), as the doctor says it;
    ``cuda_count`` is how many CUDA devices torch can use.
    """
    if "fork" in needs and not fork_available:
        return None, "needs the fork start method (Linux/macOS)"

    def problem(kind: str) -> str | None:
        if kind == "cpu":
            return None
        why = problems.get(kind, f"{kind} was not checked")
        if why is None and kind == "cuda" and "multi-gpu" in needs and cuda_count < 2:
            return f"needs 2+ GPUs, found {cuda_count}"
        return why

    if requested == "auto":
        reasons = []
        for kind in ("cuda", "mps", "cpu"):
            if kind in kinds:
                why = problem(kind)
                if why is None:
                    return kind, None
                reasons.append(f"{kind}: {why}")
        return None, "needs " + " or ".join(kinds) + "; " + "; ".join(reasons)
    kind = requested.split(":")[0]
    if kind not in kinds:
        return None, f"runs on {' or '.join(kinds)}, not {requested} (try --device {kinds[0]})"
    why = problem(kind)
    if why is not None:
        return None, f"needs {kind}: {why}"
    if kind == "cuda" and ":" in requested and int(requested.split(":")[1]) >= cuda_count:
        return None, f"{requested} does not exist ({cuda_count} GPU(s) visible)"
    return requested, None
