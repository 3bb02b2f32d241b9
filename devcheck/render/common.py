"""What every rendering shares: the one-line answer, the exit code, units and wrapping.

Text, JSON and Markdown say the same things; the decisions they share live here once, so a
change of wording or policy reaches all three.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from devcheck.facts import DoctorFacts, Finding, GpuFacts, WheelFacts, printable
from devcheck.rules.gpu import GiB, MiB
from devcheck.rules.require import passed_live_check

EXIT_OK = 0
EXIT_ERRORS = 1  # 2 (usage) is click's own
WIDTH = 100  # every text rendering reads in 100 columns

__all__ = ["EXIT_ERRORS", "EXIT_OK", "GiB", "MiB", "WIDTH", "answer", "build_text",
           "cudnn_text", "default_device_answer", "exit_code", "gib", "gpu_errors_text",
           "usable_cuda", "usable_devices", "wrap_paragraph"]


def exit_code(findings: Sequence[Finding]) -> int:
    """0 when no finding is an error, 1 otherwise (2 is click's, for usage errors)."""
    return EXIT_ERRORS if any(f.severity == "error" for f in findings) else EXIT_OK


def usable_cuda(facts: DoctorFacts) -> list[str]:
    """CUDA devices that passed the live check (the meaning of ``--require cuda``)."""
    return passed_live_check(facts.torch, "cuda")


def usable_devices(facts: DoctorFacts) -> list[str]:
    return passed_live_check(facts.torch)


def answer(facts: DoctorFacts, findings: Sequence[Finding]) -> str:
    """One line answering "can torch use my GPU?" (or, for ``gpus``, "does NVML see one?")."""
    # The cause, not the --require verdict that merely repeats it.
    blockers = [f for f in findings
                if f.severity in ("error", "warn") and not f.id.startswith("require_")]
    if facts.torch is None:
        n = facts.nvml
        if n.available and n.error is None:
            return f"NVML sees {len(n.gpus)} GPU(s), driver {n.driver_version or '?'}"
        if n.available:
            return f"NVML started but could not list the GPUs: {n.error}"
        why = next((f.title for f in blockers), n.error or "NVML unavailable")
        return why if why.endswith("torch uses the CPU") else f"NVML sees no GPU: {why}"
    cuda = usable_cuda(facts)
    if cuda:
        return f"yes: torch computes on {', '.join(cuda)}"
    t = facts.torch
    if t.cuda_available and not t.live_checks:
        return f"torch sees {t.device_count} CUDA device(s) (not live-checked)"
    if "mps" in passed_live_check(t, "mps"):
        return "yes: torch computes on mps (Apple GPU)"
    why = next((f.title for f in blockers), t.cuda_unavailable_reason or "no GPU found")
    if not t.imported:
        return f"no: {why}"
    if why.endswith("torch uses the CPU"):  # the finding already says it in plain words
        return f"no: {why}"
    return f"no GPU: {why}; torch uses the CPU"


def default_device_answer(facts: DoctorFacts) -> str | None:
    """Plain words for "does torch put my tensors on the GPU by default?" (None: unknown)."""
    t = facts.torch
    if t is None or not t.imported or t.default_device is None:
        return None
    if t.default_device == "cpu":
        gpu = usable_cuda(facts) or passed_live_check(t, "mps")
        have = (f"even though {gpu[0]} works: " if gpu else "")
        return ("no: new tensors and models go to the CPU unless you create them with "
                f"device=... or move them with .to(device); {have}a GPU being available "
                "does not mean it is used")
    return (f"yes, to {t.default_device}: torch.set_default_device was called, so factory "
            "calls such as torch.zeros(...) land there (not everything follows it; see the "
            "findings)")


def build_text(w: WheelFacts) -> str:
    """The wheel's build in two words; "build unknown" when its version.py could not be read."""
    if w.cuda_version:
        return f"CUDA {w.cuda_version}"
    if w.hip_version:
        return f"ROCm {w.hip_version}"
    if w.cpu_only is None:
        return "build unknown"
    return "CPU-only" if w.cpu_only else "no CUDA or ROCm"


def gpu_errors_text(g: GpuFacts) -> str:
    """The fields NVML could not give for one GPU, grouped by reason (printable), or ""."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in g.errors.items():
        by_reason.setdefault(printable(str(reason)), []).append(name)
    return "; ".join(f"{reason} ({', '.join(names)})" for reason, names in by_reason.items())


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def cudnn_text(version: int | None) -> str:
    """cuDNN's integer version as text: 92400 -> "9.24.0" (cuDNN 9+), 8902 -> "8.9.2"."""
    if not version:
        return "-"
    if version >= 90000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


def wrap_paragraph(text: str, *, first: str, rest: str, width: int = WIDTH) -> list[str]:
    """``text`` in ``width`` columns; URLs and commands are never broken at hyphens."""
    return textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False) or [first.rstrip()]
