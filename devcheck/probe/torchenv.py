"""The torch boundary: the one module that asks torch about its build and devices.

``torch.cuda.is_available()`` is a bool without a reason; this probe keeps the reason
(torch's own warning, or the error ``torch.cuda.init()`` raises) and goes one step further
than "available": the live check allocates on each usable device, runs a small matmul and
compares it with the CPU result, because a device can be listed and still not compute (no
kernel image for its arch, a lost GPU, an exhausted memory pool).

This module is what runs *where torch is*: normally in the child process that
:mod:`devcheck.probe.torchproc` starts (``child_main`` reports each stage as a JSON line, so
a torch that segfaults or calls ``os._exit`` still leaves a trace), or in-process where torch
is already imported. A field that could not be read is None with its reason in ``errors``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any, TextIO

from devcheck.facts import LiveCheck, TorchDevice, TorchFacts

# Matmul side. Small on purpose: at 24+ the CPU reference goes through the multi-threaded
# BLAS path, whose thread pool costs 30-70 ms on a busy 2-core machine (measured), i.e. a
# large share of the doctor's budget; 16 still launches a real GEMM kernel on the device.
LIVE_SIZE = 16
LIVE_TOLERANCE = 1e-3  # TF32 or reduced-precision reductions stay well inside this
ALLOC_BYTES = 64 * 1024**2  # accelerators also allocate and reduce this much memory


def _import_torch() -> ModuleType:
    """The import seam: tests make it raise to simulate a broken install."""
    import torch

    return torch


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"


class _Safe:
    """Reads optional facts: a failure gives ``default`` and keeps the reason by name."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def __call__(self, name: str, fn: Callable[[], Any], default: Any = None) -> Any:
        try:
            return fn()
        except Exception as exc:
            self.errors[name] = _short(exc)
            return default


def _sync(torch: ModuleType, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def live_check(torch: ModuleType, device: str) -> LiveCheck:
    """Allocate on ``device``, multiply, compare with float64 CPU math; never raises."""
    try:
        gen = torch.Generator(device="cpu").manual_seed(0)
        a = torch.rand(LIVE_SIZE, LIVE_SIZE, generator=gen, device="cpu") - 0.5
        b = torch.rand(LIVE_SIZE, LIVE_SIZE, generator=gen, device="cpu") - 0.5
        expected = a.double() @ b.double()
        torch.empty(1, device=device)  # CUDA context creation (~0.1-1 s) is not the GPU's speed
        _sync(torch, device)
        start = time.perf_counter()
        a_dev, b_dev = a.to(device), b.to(device)
        result = (a_dev @ b_dev).to("cpu")
        if device != "cpu":  # prove the allocator and a reduction kernel, too
            n = ALLOC_BYTES // 4
            total = int(torch.ones(n, device=device, dtype=torch.int32).sum().item())
            if total != n:
                raise RuntimeError(f"sum of {n} ones on {device} gave {total}")
        _sync(torch, device)
        seconds = time.perf_counter() - start
        error = float((result.double() - expected).abs().max())
    except Exception as exc:
        return LiveCheck(device=device, ok=False, error=_short(exc))
    if not error <= LIVE_TOLERANCE:  # also catches nan
        return LiveCheck(device=device, ok=False, seconds=seconds, max_abs_error=error,
                         error=f"matmul on {device} differs from the CPU result by {error:.3g} "
                               f"(expected <= {LIVE_TOLERANCE:g})")
    return LiveCheck(device=device, ok=True, seconds=seconds, max_abs_error=error)


def _cuda_facts(torch: ModuleType, live: bool, safe: _Safe | None = None) -> dict[str, Any]:
    """Availability, torch's reason when unavailable, and the visible devices."""
    safe = safe or _Safe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = bool(torch.cuda.is_available())
    reason = "; ".join(str(w.message) for w in caught) or None
    if not available and live and torch.version.cuda is not None and reason is None:
        # is_available() is silent about "no driver"; init() says it in torch's words.
        try:
            torch.cuda.init()
        except Exception as exc:
            reason = str(exc).strip() or type(exc).__name__
    devices: list[TorchDevice] = []
    count = 0
    if available:
        count = int(torch.cuda.device_count())
        for i in range(count):
            props = safe(f"devices[{i}]", partial(torch.cuda.get_device_properties, i))
            devices.append(TorchDevice(
                index=i,
                name=getattr(props, "name", None),
                capability=f"{props.major}.{props.minor}" if props is not None else None,
                memory_total_bytes=getattr(props, "total_memory", None)))
    return {"cuda_available": available, "cuda_unavailable_reason": None if available else reason,
            "device_count": count, "devices": tuple(devices)}


def _cudnn_version(torch: ModuleType, cuda_available: bool) -> int | None:
    """The loaded cuDNN's version where CUDA works; else the compiled-in one.

    Loading libcudnn just to print its version costs tens of milliseconds on a machine that
    cannot use it, and the doctor's budget is the torch import time itself.
    """
    if cuda_available:
        return torch.backends.cudnn.version()
    major, minor, patch = torch._C._cudnn.getCompileVersion()
    return int(major) * 10000 + int(minor) * 100 + int(patch)  # cuDNN 9 encoding: 92400


def _default_device(torch: ModuleType) -> str | None:
    getter = getattr(torch, "get_default_device", None)
    if getter is not None:
        return str(getter())
    return str(torch.empty(0).device)  # torch < 2.3


Progress = Callable[[dict[str, Any]], None]


def _no_progress(event: dict[str, Any]) -> None:
    """Where no parent listens (in-process use)."""


def collect_torch(live: bool = True, progress: Progress = _no_progress) -> TorchFacts:
    """Import torch once and describe it; never raises.

    ``progress`` hears each stage ({"stage": "import"}, {"stage": "facts", ...}, {"stage":
    "live", "device": ...}, {"stage": "check", ...}) so that a parent can tell where a
    crashing torch died.
    """
    progress({"stage": "import"})
    start = time.perf_counter()
    try:
        torch = _import_torch()
    except BaseException as exc:  # noqa: B036 - ImportError, OSError from a .so, SystemExit...
        return TorchFacts(imported=False, import_error=_short(exc))
    safe = _Safe()
    values: dict[str, Any] = {
        "imported": True,
        "import_seconds": time.perf_counter() - start,
        "version": str(torch.__version__),
        "cuda_version": torch.version.cuda,
        "hip_version": getattr(torch.version, "hip", None),
        "arch_list": tuple(safe("arch_list", lambda: torch.cuda.get_arch_list(), ())),
        "default_device": safe("default_device", lambda: _default_device(torch)),
        "mps_built": bool(safe("mps_built", lambda: torch.backends.mps.is_built(), False)),
        "mps_available": bool(safe("mps_available", lambda: torch.backends.mps.is_available(),
                                   False)),
    }
    progress({"stage": "cuda", "version": values["version"]})
    errors: list[str] = []
    try:
        values.update(_cuda_facts(torch, live, safe))
        values["cudnn_version"] = safe(
            "cudnn_version", lambda: _cudnn_version(torch, values["cuda_available"]))
    except Exception as exc:
        errors.append(f"CUDA query failed: {_short(exc)}")
    facts = TorchFacts(error="; ".join(errors) or None, errors=safe.errors, **values)
    progress({"stage": "facts", "facts": facts.to_dict()})
    if not live:
        return facts
    targets = ["cpu"] + [f"cuda:{d.index}" for d in facts.devices]
    if facts.mps_available:
        targets.append("mps")
    checks = []
    for device in targets:
        progress({"stage": "live", "device": device})
        check = live_check(torch, device)
        progress({"stage": "check", "check": check.to_dict()})
        checks.append(check)
    return dataclasses.replace(facts, live_checks=tuple(checks))


def probe_torch(*, live: bool = True, timeout_s: float | None = None,
                isolate: bool = True) -> TorchFacts:
    """Describe torch's build and devices (live check when ``live``); never raises.

    ``isolate`` (the default) runs it in a child process, so a torch that crashes the
    interpreter is a fact; ``timeout_s`` bounds it either way.
    """
    from devcheck.probe import torchproc  # local: the child never needs the parent's half

    job = torchproc.torch_job(live=live, isolate=isolate)
    if timeout_s is None:
        return job.fn()
    from devcheck.probe.deadline import run_job

    return run_job(job, timeout_s)


def child_main(argv: list[str] | None = None) -> int:
    """The torch probe's child: stages and facts as JSON lines on the original stdout.

    Whatever torch itself prints goes to stderr (fd 1 is pointed there), so stdout carries
    only this protocol. ``argv``: ``--no-live`` and ``--parent PID`` (end with that process).
    """
    args = sys.argv[1:] if argv is None else argv
    live = "--no-live" not in args
    if "--parent" in args:  # die with the doctor, even a SIGKILLed one (a hung torch import
        from devcheck.probe.libc import set_parent_death_signal  # would live on otherwise)

        set_parent_death_signal(parent=int(args[args.index("--parent") + 1]))
    out: TextIO = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace")
    os.dup2(2, 1)

    def emit(event: dict[str, Any]) -> None:
        out.write(json.dumps(event, default=str) + "\n")
        out.flush()

    facts = collect_torch(live, emit)
    emit({"stage": "done", "facts": facts.to_dict()})
    out.close()
    return 0
