"""The renderings under their earlier names (kept so that callers do not break).

The code lives in :mod:`devcheck.render.common` (answer, exit code), :mod:`.text`,
:mod:`.json` and :mod:`.markdown`.
"""

from __future__ import annotations

from devcheck.render.common import (
    EXIT_ERRORS,
    EXIT_OK,
    WIDTH,
    MiB,
    answer,
    exit_code,
    usable_cuda,
    usable_devices,
)
from devcheck.render.common import cudnn_text as _cudnn
from devcheck.render.json import SCHEMA_VERSION, render_json, to_json
from devcheck.render.markdown import render_markdown
from devcheck.render.text import render_finding, render_text

__all__ = ["EXIT_ERRORS", "EXIT_OK", "SCHEMA_VERSION", "WIDTH", "MiB", "_cudnn", "answer",
           "exit_code", "render_finding", "render_json", "render_markdown", "render_text",
           "to_json", "usable_cuda", "usable_devices"]
