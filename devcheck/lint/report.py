"""Text and JSON renderings of a lint run (pure: strings in, strings out; the CLI prints)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from devcheck.lint._types import Finding, ParseError


@dataclass
class LintRun:
    """Everything one ``devcheck lint`` invocation found and did."""

    files_checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)
    fixed: int = 0  # findings removed by --fix
    files_fixed: int = 0
    diffs: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 nothing found, 1 findings, 2 a file could not be read or parsed."""
        if self.errors:
            return 2
        return 1 if self.findings else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def finding_line(f: Finding) -> str:
    mark = " [*]" if f.fixable else ""
    return f"{f.location}: {f.rule}{mark} {f.message}\n    fix: {f.fix}"


def error_line(e: ParseError) -> str:
    if e.message.startswith(("cannot write", "rule ")):
        return f"{e.location} error: {e.message}"
    what = "cell" if e.cell is not None else "file"
    return f"{e.location} error: {e.message} (this {what} was skipped; the rest was checked)"


def summary(run: LintRun, fix_mode: bool = False) -> str:
    files = _plural(run.files_checked, "file")
    parts = []
    if fix_mode and run.fixed:
        parts.append(f"Fixed {_plural(run.fixed, 'finding')} in "
                     f"{_plural(run.files_fixed, 'file')}.")
    if run.findings:
        fixable = sum(f.fixable for f in run.findings)
        in_files = len({f.path for f in run.findings})
        extra = f" ({fixable} fixable with --fix)" if fixable else ""
        left = "remaining " if fix_mode and run.fixed else ""
        parts.append(f"Found {_plural(len(run.findings), left + 'finding')}{extra} in "
                     f"{in_files} of {files}.")
    else:
        parts.append(f"No findings in {files}.")
    if run.errors:
        parts.append(f"{_plural(len({e.path for e in run.errors}), 'file')} could not be "
                     "read, parsed or written (exit status 2).")
    if run.findings:
        parts.append("Explain one: devcheck pitfalls show ID.")
    return " ".join(parts)


def render_text(run: LintRun, fix_mode: bool = False) -> str:
    lines = [error_line(e) for e in run.errors]
    lines += [finding_line(f) for f in run.findings]
    lines.append(summary(run, fix_mode))
    return "\n".join(lines)


def render_json(run: LintRun) -> str:
    by_rule = Counter(f.rule for f in run.findings)
    doc: dict[str, Any] = {
        "version": 1,
        "files_checked": run.files_checked,
        "findings": [f.to_dict() for f in run.findings],
        "errors": [e.to_dict() for e in run.errors],
        "fixed": run.fixed,
        "diffs": run.diffs,  # unified diffs with --diff, else empty
        "summary": {"findings": len(run.findings),
                    "fixable": sum(f.fixable for f in run.findings),
                    "errors": len(run.errors), "by_rule": dict(sorted(by_rule.items())),
                    "exit_code": run.exit_code},
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)
