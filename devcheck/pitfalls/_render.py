"""The text a person reads for ``explain`` results (CLI, notebook hook): a string, no I/O."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devcheck.pitfalls.explain import Match

WIDTH = 100


def _wrap(text: str, first: str, rest: str | None = None) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=first,
                         subsequent_indent=first if rest is None else rest)


def render(matches: list[Match], n_chars: int) -> str:
    """Top match in full (evidence, cause, notes, fixes with code), others in brief."""
    if not matches:
        return (f"No known device pitfall matches this text ({n_chars} characters read).\n"
                "If the problem is GPU setup (driver, wheel, visibility), run `devcheck "
                "doctor`;\n`devcheck pitfalls list` shows every pitfall devcheck knows.")
    top, rest = matches[0], matches[1:]
    out = [f"Most likely: {top.id} (confidence: {top.confidence})", f"  {top.title}", "",
           "Seen:"]
    out += [_wrap(e, "  - ", "    ") for e in top.evidence[:8]]
    out += ["", "Why:", _wrap(top.mechanism, "  "), _wrap(f"{top.source_label}: {top.source}",
                                                          "  ")]
    if top.notes:
        out += ["", "What the text and this machine say:"]
        out += [_wrap(n, "  - ", "    ") for n in top.notes]
    out += ["", "Fix, best first:"]
    for i, f in enumerate(top.fixes, 1):
        out.append(_wrap(f"{i}. {f.title}", "  ", "     "))
        if f.code:
            out.append(textwrap.indent(f.code.strip(), "       "))
    if top.warnings:
        out += ["", "Watch out:"] + [_wrap(w, "  - ", "    ") for w in top.warnings]
    out += ["", f"See it fail and the fix pass: {top.reproduce_command}"]
    from devcheck.lint import rule_for_pitfall  # the lint rule that would have caught it
    out += [line for line in [rule_for_pitfall(top.id)] if line]
    if rest:
        out += ["", "Also possible:"]
        for m in rest:
            first_fix = m.fixes[0].title if m.fixes else ""
            out += [f"  {m.id} (confidence: {m.confidence}): {m.title}",
                    _wrap(f"fix: {first_fix}", "    ", "      "), f"    {m.reproduce_command}"]
    return "\n".join(out)
