"""Error text in, ranked pitfalls out: ``devcheck explain``, the IPython hook, the trainer.

Pure text work: the input is never executed or evaluated, torch is never imported, and
cost stays linear in the input. The input is *streamed*: read in windows of
``WINDOW_CHARS`` that overlap by ``OVERLAP_CHARS``, so a message split across two reads is
still seen whole, and only bounded state survives a window (the best hit per symptom,
the frames, hints and CUDA error numbers seen, the last exception lines, a few facts).
Any length is read in bounded memory, and every character is read (reading and scanning:
:mod:`devcheck.pitfalls._stream`; this module ranks and explains).

Each symptom has a literal *anchor*; anchors are found with ``str.find`` and a symptom's
regex only runs on a small span around each hit, so no pattern can backtrack over the
whole input. Evidence, strongest first: a known message form (weighted by how exact the
form is), an old-style CUDA error number (``cuda runtime error (2)``), a message cut
mid-line that is a prefix of a known form, the source files in the traceback, and hint
words that break ties between pitfalls sharing one message.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from devcheck.facts import ToDict
from devcheck.pitfalls._base import Fix, Pitfall, Symptom
from devcheck.pitfalls._stream import (
    _EXC_LINE,
    MAX_READ_CHARS,
    OVERLAP_CHARS,
    READ_BYTES,
    WINDOW_CHARS,
    Scan,
    decode,
    decode_chunks,
    normalize,
    scan,
)
from devcheck.pitfalls._textfacts import TextFacts

FRAME_BONUS = 0.15
HINT_BONUS, HINT_CAP = 0.05, 0.15
CODE_WEIGHT = 0.85  # "cuda runtime error (N)": the number is exact, the wording is old
FRAMES_ONLY_BASE = 0.45  # every listed frame present, no message: still a strong lead
YIELD_BONUS = 0.1
MIN_SCORE = 0.3

_QUOTED = re.compile(r"(?<![A-Za-z])'[^'\n]{0,60}'?")  # quoted values, not "can't"
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class FixText(ToDict):
    title: str
    code: str


@dataclass(frozen=True)
class Match(ToDict):
    """One pitfall that fits the text. ``score`` ranks matches (>= 0.9: an exact known
    message; frames and hints add to it); it is not a probability: ``confidence`` says it
    in a word (high: a known message; medium: an old or cut wording, or the traceback's
    frames; low: hints alone)."""

    id: str
    score: float
    confidence: str
    title: str
    mechanism: str
    fix: str  # the fix titles, numbered (one line each)
    fixes: tuple[FixText, ...]
    reproduce_command: str
    source: str = ""
    source_label: str = "Where in torch"
    symptom: str | None = None  # the line of the input that matched
    variant: str = ""
    evidence: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the text (and this machine) say, for this error
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Explanation:
    """The ranked matches, how many characters were really read, and what the text says
    about its machine. ``with_machine`` re-fits the advice to a machine's facts."""

    matches: list[Match]
    chars_read: int
    facts: TextFacts
    limit: int = 5
    truncated: bool = False  # reading stopped at MAX_READ_CHARS
    state: Any = field(default=None, repr=False, compare=False)  # the bounded scan state

    def with_machine(self, machine: Any) -> Explanation:
        if self.state is None or not self.matches:
            return self
        ranked = _rank(self.state, machine)
        return replace(self, matches=[m for _, m in ranked[:self.limit]])


def confidence(score: float) -> str:
    return "high" if score >= 0.85 else "medium" if score >= 0.6 else "low"


# ------------------------------------------------------------------ ranking


def _canon(message: str) -> str:
    message = _QUOTED.sub("'_'", message.lower())
    return _SPACES.sub(" ", _DIGITS.sub("0", message)).strip()


def _example_message(example: str) -> str:
    first = example.strip().splitlines()[0] if example.strip() else ""
    m = _EXC_LINE.match(first)
    return m.group(2) if m else first


def _find_cut(pitfall: Pitfall, candidates: Iterable[str]) -> tuple[float, str | None]:
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


def _best_symptom(p: Pitfall, st: Scan) -> tuple[float, Symptom | None, str | None, str]:
    best: tuple[float, Symptom | None, str | None, str] = (0.0, None, None, "")
    for i, s in enumerate(p.symptoms):
        hit = st.hits.get((p.id, i))
        if hit is None or (s.requires and s.requires not in st.literals):
            continue
        if s.weight > best[0]:
            best = (s.weight, s, hit[0], hit[1])
    for code, line in st.codes.items():
        if code in p.cuda_errors and CODE_WEIGHT > best[0]:
            best = (CODE_WEIGHT, None, line, "")
    return best


def _rank(st: Scan, machine: Any = None) -> list[tuple[float, Match]]:
    facts = st.facts.facts()
    ranked: dict[str, tuple[float, Match]] = {}
    for p in st.pitfalls:
        weight, symptom, line, device = _best_symptom(p, st)
        evidence: list[str] = []
        if line is not None:
            variant = symptom.variant if symptom else "old wording: CUDA error number"
            evidence.append(f"message: {line}" + (f" ({variant})" if variant else ""))
        else:
            weight, line = _find_cut(p, st.exc_lines)
            if line is not None:
                evidence.append(f"message (cut): {line}")
        frames = [st.frames[(p.id, f)] for f in p.frames if (p.id, f) in st.frames]
        evidence.extend(f"frame: {f}" for f in frames)
        raw = weight + FRAME_BONUS * len(frames)
        if weight == 0.0:
            if len(p.frames) < 2 or len(frames) < len(p.frames):
                continue
            raw += FRAMES_ONLY_BASE
        hints = [h for h in p.hints if h.lower() in st.literals]
        raw += min(HINT_CAP, HINT_BONUS * len(hints))
        evidence.extend(f"hint: {h}" for h in hints)
        if raw >= MIN_SCORE:
            ranked[p.id] = (raw, _match(p, raw, symptom, line, device, evidence, facts,
                                        machine))
    _apply_yields(st, ranked, facts, machine)
    return sorted(ranked.values(), key=lambda pair: (-pair[0], pair[1].id))


def _apply_yields(st: Scan, ranked: dict[str, tuple[float, Match]], facts: TextFacts,
                  machine: Any) -> None:
    """A message raised inside a torch frame that proves another cause: that cause first."""
    from devcheck.pitfalls import REGISTRY

    for pid, (score, m) in list(ranked.items()):
        for literal, target in REGISTRY[pid].yields_to:
            if literal.lower() not in st.literals or target not in REGISTRY:
                continue
            new = score + YIELD_BONUS
            if target in ranked and ranked[target][0] >= new:
                continue
            old = ranked.get(target)
            evidence = (f"raised inside {literal}: the error comes from torch's own code, "
                        f"so the cause is {target}, not {pid}", *m.evidence)
            if old is not None:
                evidence += tuple(e for e in old[1].evidence if e not in evidence)
            t = REGISTRY[target]
            ranked[target] = (new, _match(t, new, None, m.symptom, "", list(evidence), facts,
                                          machine))


def _match(p: Pitfall, score: float, symptom: Symptom | None, line: str | None, device: str,
           evidence: list[str], facts: TextFacts, machine: Any) -> Match:
    from devcheck.pitfalls._advice import tailor

    dev = device.split(":")[0].lower()
    if dev not in ("cuda", "mps", "xpu"):  # the message named no accelerator: say cuda
        dev = "cuda"
    mechanism, fixes, warnings = p.texts(dev, symptom)
    advice = tailor(p.id, fixes, facts, machine)
    fix_items = tuple(FixText(f.title, f.code.strip()) for f in advice.fixes)
    return Match(
        id=p.id, score=round(score, 3), confidence=confidence(score), title=p.title,
        mechanism=mechanism,
        fix="\n".join(f"{i}. {f.title}" for i, f in enumerate(fix_items, 1)),
        fixes=fix_items, reproduce_command=f"devcheck pitfalls run {p.id}",
        source=p.source, source_label=p.source_label, symptom=line,
        variant=symptom.variant if symptom else "", evidence=tuple(evidence),
        notes=advice.notes, warnings=warnings,
    )


# ------------------------------------------------------------------ entry points


def explain_stream(texts: Iterable[str], *, limit: int = 5, machine: Any = None) -> Explanation:
    """Rank the pitfalls that fit a streamed text (best first); bounded memory."""
    st = scan(texts)
    if not st.hits and not st.codes and not st.frames and not st.exc_lines:
        return Explanation([], st.chars, st.facts.facts(), limit, st.truncated)
    ranked = _rank(st, machine)
    return Explanation([m for _, m in ranked[:max(0, limit)]], st.chars, st.facts.facts(),
                       limit, st.truncated, st)


def explain_text(text: str, *, limit: int = 5, machine: Any = None) -> list[Match]:
    """Rank the pitfalls that fit an error message or traceback (best first)."""
    if not text or not text.strip():
        return []
    chunks = (text[i:i + WINDOW_CHARS] for i in range(0, len(text), WINDOW_CHARS))
    return explain_stream(chunks, limit=limit, machine=machine).matches


def explain_exception(exc: BaseException, *, limit: int = 5) -> list[Match]:
    """Explain a live exception from its full formatted traceback (causes included)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return explain_text(text, limit=limit)


__all__ = ["MAX_READ_CHARS", "OVERLAP_CHARS", "READ_BYTES", "WINDOW_CHARS", "Explanation",
           "Fix", "FixText", "Match", "confidence", "decode", "decode_chunks", "explain_exception",
           "explain_stream", "explain_text", "normalize", "render"]


def render(matches: list[Match], n_chars: int) -> str:
    """The text a person reads (CLI, notebook): top match in full, others in brief."""
    from devcheck.pitfalls._render import render as _render

    return _render(matches, n_chars)
