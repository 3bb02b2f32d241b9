"""Error text in, ranked pitfalls out: ``devcheck explain``, the IPython hook, the trainer.

Pure text work: the input is never executed or evaluated, torch is never imported, and
cost stays linear in the input. Each symptom has a literal *anchor*; anchors are found
with ``str.find`` and a symptom's regex only runs on a small window around each hit, so
a 10 MB log or binary junk costs a few passes of C-speed substring search, and no pattern
can backtrack over the whole input.

Evidence, strongest first: a known message form (weighted by how exact the form is), a
message cut mid-line that is a prefix of a known form, the source files in the traceback
(``sampler.py`` + ``_device.py`` identify the default-device case even without a message),
and a few hint words that break ties between pitfalls sharing one message.
"""

from __future__ import annotations

import re
import textwrap
import traceback
from dataclasses import dataclass, field
from typing import Any

from devcheck.facts import ToDict

MAX_CHARS = 4_000_000  # longer input: keep the head and the (more telling) tail
_HEAD_CHARS = 1_000_000
_WINDOW_BEFORE, _WINDOW_AFTER = 300, 700
_MAX_HITS_PER_ANCHOR = 25
FRAME_BONUS = 0.15
HINT_BONUS, HINT_CAP = 0.05, 0.15
FRAMES_ONLY_BASE = 0.45  # every listed frame present, no message: still a strong lead
MIN_SCORE = 0.3

_ANSI = re.compile(r"\x1b\[[0-?]{0,32}[ -/]{0,8}[@-~]|\x1b\][^\x07\x1b]{0,2000}(?:\x07|\x1b\\)?"
                   r"|\x1b[@-Z\\-_]")
_CONTROL = {c: None for c in range(32) if c not in (9, 10)}
_CONTROL[127] = None
_EXC_LINE = re.compile(r"^[ \t>|-]{0,12}(?:[\w.]{1,80}\.)?(\w{1,60}(?:Error|Exception|Warning|"
                       r"Interrupt))[ \t]{0,4}:[ \t]{0,4}(.{8,400})$")
_QUOTED = re.compile(r"(?<![A-Za-z])'[^'\n]{0,60}'?")  # quoted values, not "can't"
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Match(ToDict):
    """One pitfall that fits the text. ``score`` ranks matches (>= 0.9: an exact known
    message; frames and hints add to it); it is not a probability."""

    id: str
    score: float
    title: str
    mechanism: str
    fix: str
    fix_code: str
    reproduce_command: str
    source: str = ""
    symptom: str | None = None  # the line of the input that matched
    variant: str = ""
    evidence: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def decode(data: bytes) -> str:
    """Bytes from a file or pipe to text, whatever the encoding junk."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", "replace")
    return data.decode("utf-8", "replace")


def normalize(text: str) -> tuple[str, bool]:
    """Cap the size, drop ANSI colour codes and control characters, unify newlines."""
    truncated = len(text) > MAX_CHARS
    if truncated:
        text = text[:_HEAD_CHARS] + "\n" + text[-(MAX_CHARS - _HEAD_CHARS):]
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_CONTROL), truncated


def _line_at(text: str, index: int) -> str:
    start = text.rfind("\n", max(0, index - 400), index) + 1
    end = text.find("\n", index, index + 400)
    return text[start: end if end != -1 else index + 400].strip()[:300]


def _canon(message: str) -> str:
    message = _QUOTED.sub("'_'", message.lower())
    return _SPACES.sub(" ", _DIGITS.sub("0", message)).strip()


def _example_message(example: str) -> str:
    first = example.strip().splitlines()[0] if example.strip() else ""
    m = _EXC_LINE.match(first)
    return m.group(2) if m else first


def _exception_lines(text: str) -> list[str]:
    """Candidate 'SomeError: message' lines near the end (where tracebacks end)."""
    tail = text[-200_000:]
    found = []
    for line in tail.splitlines()[-400:]:
        if ":" in line and len(line) < 600:
            m = _EXC_LINE.match(line.rstrip())
            if m:
                found.append(m.group(2).strip())
    return found[-40:]


def _find_symptom(pitfall: Any, text: str, low: str) -> tuple[float, str | None, str, str]:
    """Best (weight, matched line, variant, device) among the pitfall's symptom forms."""
    best: tuple[float, str | None, str, str] = (0.0, None, "", "")
    for symptom in pitfall.symptoms:
        if symptom.weight <= best[0]:
            continue
        rx = symptom.compiled()
        pos, hits = low.find(symptom.anchor), 0
        while pos != -1 and hits < _MAX_HITS_PER_ANCHOR:
            lo = max(0, pos - _WINDOW_BEFORE)
            m = rx.search(text, lo, pos + len(symptom.anchor) + _WINDOW_AFTER)
            if m:
                device = m.groupdict().get("device") or ""
                best = (symptom.weight, _line_at(text, m.start()), symptom.variant, device)
                break
            pos, hits = low.find(symptom.anchor, pos + 1), hits + 1
    return best


def _find_cut(pitfall: Any, candidates: list[str]) -> tuple[float, str | None]:
    """A message cut mid-line: the input's exception line is a prefix of a known form."""
    best: tuple[float, str | None] = (0.0, None)
    for cand in candidates:
        c = _canon(cand).rstrip("'_ ")
        if len(c) < 16:
            continue
        for symptom in pitfall.symptoms:
            full = _canon(_example_message(symptom.example))
            if full.startswith(c) and len(c) < len(full):
                weight = symptom.weight * (0.5 + 0.4 * len(c) / len(full))
                if weight > best[0]:
                    best = (weight, cand)
    return best


def _frames_seen(pitfall: Any, slashed_low: str, slashed: str) -> list[str]:
    seen = []
    for frame in pitfall.frames:
        pos = slashed_low.rfind(frame.lower())
        if pos != -1:
            seen.append(_line_at(slashed, pos)[-160:])
    return seen


def explain_text(text: str, *, limit: int = 5) -> list[Match]:
    """Rank the pitfalls that fit an error message or traceback (best first)."""
    from devcheck.pitfalls import all_pitfalls

    if not text or not text.strip():
        return []
    text, truncated = normalize(text)
    low = text.lower()
    slashed = text.replace("\\", "/") if "\\" in text else text
    slashed_low = slashed.lower()
    candidates = _exception_lines(text)
    ranked: list[tuple[float, Match]] = []
    for pitfall in all_pitfalls():
        weight, line, variant, device = _find_symptom(pitfall, text, low)
        evidence: list[str] = []
        if line is not None:
            evidence.append(f"message: {line}" + (f" ({variant})" if variant else ""))
        else:
            weight, line = _find_cut(pitfall, candidates)
            if line is not None:
                evidence.append(f"message (cut): {line}")
        frames = _frames_seen(pitfall, slashed_low, slashed)
        evidence.extend(f"frame: {f}" for f in frames)
        raw = weight + FRAME_BONUS * len(frames)
        if weight == 0.0:
            if len(pitfall.frames) < 2 or len(frames) < len(pitfall.frames):
                continue
            raw += FRAMES_ONLY_BASE
        hints = [h for h in pitfall.hints if h.lower() in low]
        raw += min(HINT_CAP, HINT_BONUS * len(hints))
        evidence.extend(f"hint: {h}" for h in hints)
        if raw < MIN_SCORE:
            continue
        if truncated:
            evidence.append(f"input over {MAX_CHARS} characters: only its head and tail "
                            "were read")
        ranked.append((raw, _match(pitfall, round(raw, 3), line, variant, device, evidence)))
    ranked.sort(key=lambda pair: (-pair[0], pair[1].id))
    return [m for _, m in ranked[:max(0, limit)]]


def _match(pitfall: Any, score: float, line: str | None, variant: str, device: str,
           evidence: list[str]) -> Match:
    dev = device.split(":")[0]
    if dev not in ("cuda", "mps", "xpu"):  # the message named no accelerator: say cuda
        dev = "cuda"
    return Match(
        id=pitfall.id, score=score, title=pitfall.title,
        mechanism=pitfall.mechanism.replace("{device}", dev),
        fix=pitfall.fix_text, fix_code=pitfall.fix_code,
        reproduce_command=f"devcheck pitfalls run {pitfall.id}",
        source=pitfall.source, symptom=line, variant=variant,
        evidence=tuple(evidence), warnings=pitfall.warnings,
    )


def explain_exception(exc: BaseException, *, limit: int = 5) -> list[Match]:
    """Explain a live exception from its full formatted traceback (causes included)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return explain_text(text, limit=limit)


def _wrap(text: str, indent: str, width: int = 100) -> str:
    return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent)


def render(matches: list[Match], n_chars: int) -> str:
    """The text a person reads (CLI, notebook): top match in full, others in brief."""
    if not matches:
        return (f"No known device pitfall matches this text ({n_chars} characters read).\n"
                "If the problem is GPU setup (driver, wheel, visibility), run `devcheck "
                "doctor`;\n`devcheck pitfalls list` shows every pitfall devcheck knows.")
    top, rest = matches[0], matches[1:]
    out = [f"Most likely: {top.id} (score {top.score:.2f})", f"  {top.title}", "", "Seen:"]
    out += [f"  - {e}" for e in top.evidence[:8]]
    out += ["", "Why:", _wrap(top.mechanism, "  "), _wrap(f"Where: {top.source}", "  "), "",
            "Fix, best first:"]
    for block in top.fix_code.split("\n\n# "):
        head, _, code = block.partition("\n")
        out.append("  " + head.lstrip("# "))
        if code:
            out.append(textwrap.indent(code.strip(), "       "))
    if top.warnings:
        out += ["", "Watch out:"] + [_wrap(w, "  - ").replace("  - ", "  - ", 1).replace(
            "\n  - ", "\n    ") for w in top.warnings]
    out += ["", f"See it fail and the fix pass: {top.reproduce_command}"]
    if rest:
        out += ["", "Also possible:"]
        for m in rest:
            first_fix = m.fix.splitlines()[0].split(". ", 1)[-1] if m.fix else ""
            out += [f"  {m.id} (score {m.score:.2f}): {m.title}", f"    fix: {first_fix}",
                    f"    {m.reproduce_command}"]
    return "\n".join(out)
