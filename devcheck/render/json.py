"""The JSON document (schema in docs/doctor.md): strict RFC 8259 in every failure mode.

Keys are added, never renamed; ``schema_version`` changes only on an incompatible change
(docs/doctor.md lists each change).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from devcheck.facts import DoctorFacts, Finding
from devcheck.render.common import (
    answer,
    default_device_answer,
    exit_code,
    usable_cuda,
    usable_devices,
)

SCHEMA_VERSION = 2


def to_json(facts: DoctorFacts, findings: Sequence[Finding], *, command: str,
            extra_findings: Sequence[Finding] | None = None) -> dict[str, Any]:
    """The documented JSON document (see docs/doctor.md for every key)."""
    all_findings = list(findings) + list(extra_findings or [])
    nvml = facts.nvml.to_dict()
    gpus = nvml.pop("gpus")
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "summary": {
            "answer": answer(facts, all_findings),
            "default_device_answer": default_device_answer(facts),
            "usable_devices": usable_devices(facts),
            "cuda_usable": usable_cuda(facts),
            "errors": sum(f.severity == "error" for f in all_findings),
            "warnings": sum(f.severity == "warn" for f in all_findings),
            "exit_code": exit_code(all_findings),
        },
        "host": facts.host.to_dict(),
        "nvml": nvml,
        "gpus": gpus,
        "wheel": facts.wheel.to_dict(),
        "torch": facts.torch.to_dict() if facts.torch is not None else None,
        "findings": [f.to_dict() for f in all_findings],
    }


def _finite(value: Any) -> Any:
    """NaN/Infinity (a GPU computing garbage) as null: they are not JSON, and jq rejects them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def render_json(document: dict[str, Any]) -> str:
    """Strict RFC 8259 JSON in every failure mode (the evidence text keeps the NaN)."""
    return json.dumps(_finite(document), indent=2, sort_keys=False, default=str,
                      allow_nan=False)
