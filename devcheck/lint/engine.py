"""Run the rules over sources: selection, ``# noqa``, findings, and fixes (text edits).

Fixes edit the original text at exact positions taken from the tree (insertions only:
a keyword argument, an ``x = `` in front of a discarded ``x.to(d)``); nothing else in the
file is touched or reformatted. Notebooks are fixed cell by cell and written back as
JSON with their outputs and metadata unchanged.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from devcheck.lint._types import Edit, Finding, Hit, ParseError, Rule
from devcheck.lint.scope import Context
from devcheck.lint.source import Source, read_notebook, read_python, read_source, split_lines

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<ids>[\w.-]+(?:[\s,]+[\w.-]+)*))?", re.I)
# ruff warns about a noqa comment naming only codes it does not know; it ignores this one.
_IGNORE = re.compile(r"#\s*devcheck:\s*ignore\[(?P<ids>[\w.,\s-]+)\]", re.I)
_LINE_ENDS = re.compile(r"\r\n|\r|\n")


@dataclass
class FileResult:
    """What linting one file found: findings, parse errors, and the fixes on offer."""

    source: Source
    findings: list[Finding] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.source.path


def select_rules(rules: Iterable[Rule], select: Iterable[str] = (),
                 ignore: Iterable[str] = ()) -> list[Rule]:
    chosen, dropped = set(select), set(ignore)
    return [r for r in rules if (not chosen or r.id in chosen) and r.id not in dropped]


def _suppressed(line_text: str, rule_id: str) -> bool:
    if "#" not in line_text:
        return False
    m = _IGNORE.search(line_text)
    if m is not None:
        return rule_id in re.split(r"[\s,]+", m.group("ids").strip())
    m = _NOQA.search(line_text)
    if m is None:
        return False
    ids = m.group("ids")
    return ids is None or rule_id in re.split(r"[\s,]+", ids.strip())


def lint_source(source: Source, rules: Iterable[Rule]) -> FileResult:
    """Apply the rules to one parsed source; parse errors pass through unchanged."""
    result = FileResult(source, errors=list(source.errors))
    if source.tree is None:
        return result
    applicable = [r for r in rules if not (
        (r.script_only and source.kind != "py") or (r.notebook_only and source.kind != "ipynb")
        or (r.needs and not any(word in source.text for word in r.needs)))]
    if not applicable:
        return result  # most files of a project: nothing to analyse, no tree walk
    try:
        ctx = Context(source)
    except RecursionError:
        result.errors.append(ParseError(source.path, "cannot analyse: nested too deeply"))
        return result
    for rule in applicable:
        try:
            hits = list(rule.check(ctx))
        except RecursionError:  # a pathological expression: say so, check the rest
            result.errors.append(ParseError(source.path, f"rule {rule.id} could not analyse "
                                            "this file: an expression is nested too deeply"))
            continue
        for hit in hits:
            if _is_suppressed(source, hit, rule.id):
                continue
            result.findings.append(_finding(source, rule, hit))
            result.edits.extend(hit.edits)
    result.findings.sort(key=lambda f: (f.cell or 0, f.line, f.col, f.rule))
    return result


def _is_suppressed(source: Source, hit: Hit, rule_id: str) -> bool:
    lines = {hit.line, hit.end_line}
    return any(0 < n <= len(source.lines) and _suppressed(source.lines[n - 1], rule_id)
               for n in lines)


def _finding(source: Source, rule: Rule, hit: Hit) -> Finding:
    cell, line = source.cell_at(hit.line)
    _, end_line = source.cell_at(hit.end_line)
    return Finding(rule=rule.id, path=source.path, line=line, col=hit.col + 1,
                   end_line=end_line, end_col=hit.end_col + 1, message=hit.message,
                   fix=hit.fix, fixable=bool(hit.edits), cell=cell)


def lint_file(path: Path, rules: Iterable[Rule], display: str | None = None) -> FileResult:
    return lint_source(read_source(path, display), list(rules))


def lint_text(text: str, rules: Iterable[Rule], path: str = "<string>",
              notebook: bool = False) -> FileResult:
    """Lint code held in memory (the IPython extension's cell, tests)."""
    data = text.encode("utf-8")
    src = read_notebook(path, data) if notebook else read_python(path, data)
    return lint_source(src, list(rules))

# ---------------------------------------------------------------------- fixing


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply insertions/replacements at (line, char col) positions of ``text``.

    Insertions at the same place are kept in the order given (rule order), and an edit
    overlapping one already applied is dropped rather than risk a broken file.
    """
    starts = [0]
    for m in _LINE_ENDS.finditer(text):
        starts.append(m.end())

    def offset(line: int, col: int) -> int:
        return starts[line - 1] + col

    spans: dict[tuple[int, int], tuple[int, str]] = {}
    for e in edits:
        a, b = offset(e.line, e.col), offset(e.end_line, e.end_col)
        if (a, b) in spans and a == b:
            spans[(a, b)] = (b, spans[(a, b)][1] + e.text)
        elif (a, b) not in spans:
            spans[(a, b)] = (b, e.text)
    out, last = text, len(text) + 1
    for (a, b), (_, new) in sorted(spans.items(), key=lambda kv: kv[0], reverse=True):
        if b > last:
            continue
        out = out[:a] + new + out[b:]
        last = a
    return out


@dataclass(frozen=True)
class FixedFile:
    """A file with its fixes applied: what to write, and what changed (for --diff)."""

    path: str
    data: bytes  # the new file content
    changes: tuple[tuple[str, str, str], ...]  # (label, before, after) per file or cell


def fixed_file(result: FileResult) -> FixedFile | None:
    """The file with every offered fix applied, or None when nothing changes."""
    src = result.source
    if not result.edits:
        return None
    if src.kind == "py":
        after = apply_edits(src.text, result.edits)
        if after == src.text:
            return None
        return FixedFile(src.path, after.encode(src.encoding), ((src.path, src.text, after),))
    assert src.notebook is not None
    by_cell: dict[int, list[Edit]] = {}
    for e in result.edits:
        cell, line = src.cell_at(e.line)
        _, end = src.cell_at(e.end_line)
        if cell is not None:
            by_cell.setdefault(cell, []).append(Edit(line, e.col, end, e.end_col, e.text))
    nb = copy.deepcopy(src.notebook)
    changes: list[tuple[str, str, str]] = []
    for c in src.cells:
        if c.number not in by_cell:
            continue
        new = apply_edits(c.source, by_cell[c.number])
        if new == c.source:
            continue
        cell_json = nb["cells"][c.index]
        cell_json["source"] = new if isinstance(cell_json.get("source"), str) else \
            new.splitlines(keepends=True)
        changes.append((f"{src.path}:cell {c.number}", c.source, new))
    if not changes:
        return None
    text = json.dumps(nb, indent=src.json_indent, ensure_ascii=False) + "\n"
    return FixedFile(src.path, text.encode("utf-8"), tuple(changes))


def unified_diff(fixed: FixedFile) -> str:
    out: list[str] = []
    for label, before, after in fixed.changes:
        out.extend(difflib.unified_diff(split_lines(before), split_lines(after),
                                        f"a/{label}", f"b/{label}", lineterm=""))
    return "\n".join(out) + "\n"
