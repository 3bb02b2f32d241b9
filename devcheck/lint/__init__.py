"""``devcheck lint``: device pitfalls found in the source, before the code runs.

Reads ``.py`` files and notebooks with Python's own ``ast`` (no torch import, no third-party
parser), resolves import aliases, and applies rules whose ids are pitfall ids: the finding
``hidden_host_sync`` here is the pitfall ``devcheck pitfalls show hidden_host_sync`` explains
and the lab reproduces.
"""

from __future__ import annotations

from devcheck.lint import rules_default, rules_device, rules_io, rules_loop
from devcheck.lint._types import Edit, Finding, Hit, ParseError, Rule
from devcheck.lint.engine import FileResult, lint_file, lint_source, lint_text, select_rules

__all__ = ["RULES", "Edit", "FileResult", "Finding", "Hit", "ParseError", "Rule", "get_rule",
           "lint_file", "lint_source", "lint_text", "rule_for_pitfall", "select_rules"]

# Docs order: the headline default-device case first, then by how often people hit them.
RULES: tuple[Rule, ...] = (
    rules_default.DEFAULT_DEVICE_SAMPLER_GENERATOR,
    rules_default.DEFAULT_DEVICE_NOT_APPLIED,
    rules_device.TENSOR_TO_NOT_INPLACE,
    rules_loop.HIDDEN_HOST_SYNC,
    rules_io.GPU_CHECKPOINT_ON_CPU,
    rules_io.TORCH_LOAD_WEIGHTS_ONLY,
    rules_io.SPAWN_NEEDS_IMPORTABLE_MAIN,
    rules_device.CUDA_AVAILABLE_BUT_UNUSED,
    rules_device.NO_CPU_FALLBACK,
    rules_io.NOTEBOOK_PLOT_IN_SCRIPT,
    rules_loop.UNSTABLE_SOFTMAX,
    rules_loop.DDP_MISSING_SET_EPOCH,
    rules_device.PIN_MEMORY_WITHOUT_ACCELERATOR,
)
_BY_ID = {r.id: r for r in RULES}


def get_rule(rule_id: str) -> Rule:
    """The rule with this id; KeyError names the known ids."""
    try:
        return _BY_ID[rule_id]
    except KeyError:
        raise KeyError(f"no lint rule {rule_id!r}; known: {', '.join(_BY_ID)}") from None


def rule_for_pitfall(pitfall_id: str) -> str | None:
    """One line (<= 100 characters) for ``devcheck explain`` and the notebook hook: the lint
    rule that would have caught this pitfall before the code ran, or None when none does."""
    if pitfall_id in _BY_ID:
        return f"Catch it before it runs: devcheck lint --select {pitfall_id} YOUR_FILE"
    causes = [r.id for r in RULES if pitfall_id in r.covers]
    if not causes:
        return None
    return f"Catch a cause before it runs: devcheck lint --select {','.join(causes)}"
