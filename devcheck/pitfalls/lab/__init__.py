"""Runs pitfall reproductions in isolated processes, paying torch's import once.

A *zygote* interpreter imports torch (and the registry) once, then forks one fresh child
per phase (``reproduce`` or ``fixed``): each run starts from the same clean state, cannot
leak a default device, a mount namespace or a poisoned CUDA context into the next, and is
killed with its whole process group when it overruns its timeout, when the zygote is
stopped, or when ``devcheck`` itself dies. Where ``fork`` does not exist (Windows) or
``DEVCHECK_LAB_MODE=spawn`` is set, each phase runs in a fresh interpreter instead: slower,
equally isolated.

Modules: :mod:`.parent` (the pool, timeouts, runs; no torch), :mod:`.results` (results and
the pure verdict), :mod:`.zygote` (fork mechanics, signals), :mod:`.child` (what runs in
the child). Importing this package never imports torch.
"""

from __future__ import annotations

from devcheck.pitfalls.lab.parent import Lab, run_pitfall, run_pitfalls
from devcheck.pitfalls.lab.results import PhaseResult, RunResult, Status, describe, verdict

__all__ = ["Lab", "PhaseResult", "RunResult", "Status", "describe", "run_pitfall",
           "run_pitfalls", "verdict"]
