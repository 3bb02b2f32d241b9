"""Reading a pasted text in bounded memory: decode, normalise, window, and scan.

The input is *streamed*: read in windows of ``WINDOW_CHARS`` that overlap by
``OVERLAP_CHARS``, so a message split across two reads is still seen whole, and only
bounded state survives a window (:class:`Scan`: the best hit per symptom, the frames, hint
words and CUDA error numbers seen, the last exception lines, a few facts). Literals are
found with ``str.find`` (shared gate scans, :class:`Finder`) and a symptom's regex only
runs on a short span around its anchor, so no pattern can backtrack over the input.
Ranking is :mod:`devcheck.pitfalls.explain`'s job.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections import deque
from collections.abc import Iterable, Iterator

from devcheck.pitfalls._base import CUDA_CODE_ANCHORS, Pitfall, Symptom, cuda_error_codes
from devcheck.pitfalls._textfacts import FactCollector

WINDOW_CHARS = 1 << 20  # characters matched at once
OVERLAP_CHARS = 8192  # carried into the next window: no message is split unseen
READ_BYTES = 1 << 20
MAX_READ_CHARS = 256 << 20  # reading stops here (and says so): an input may never end
_SPAN_BEFORE, _SPAN_AFTER = 300, 700
_MAX_HITS_PER_ANCHOR = 25

_ANSI = re.compile(r"\x1b\[[0-?]{0,32}[ -/]{0,8}[@-~]|\x1b\][^\x07\x1b]{0,2000}(?:\x07|\x1b\\)?"
                   r"|\x1b[@-Z\\-_]")
_CONTROL = {c: None for c in range(32) if c not in (9, 10)}
_CONTROL[127] = None
_EXC_LINE = re.compile(r"^[ \t>|-]{0,12}(?:\[rank\d+\]: ?)?(?:[\w.]{1,80}\.)?"
                       r"(\w{1,60}(?:Error|Exception|Warning|Interrupt))[ \t]{0,4}:[ \t]{0,4}"
                       r"(.{8,400})$")


# ------------------------------------------------------------------ reading


def decode_chunks(chunks: Iterable[bytes]) -> Iterator[str]:
    """Bytes from a file or pipe to text, chunk by chunk (UTF-16 by BOM, else UTF-8)."""
    decoder: codecs.IncrementalDecoder | None = None
    for chunk in chunks:
        if decoder is None:
            enc = "utf-16" if chunk[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
            decoder = codecs.getincrementaldecoder(enc)("replace")
        text = decoder.decode(chunk)
        if text:
            yield text
    if decoder is not None:
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


def decode(data: bytes) -> str:
    """Bytes to text, whatever the encoding junk."""
    return "".join(decode_chunks([data]))


def normalize(text: str) -> str:
    """Drop ANSI colour codes and control characters, unify newlines."""
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_CONTROL)


def _pieces(texts: Iterable[str]) -> Iterator[tuple[str, int]]:
    """(normalised piece, raw characters it covers), cut where no escape or CRLF is split."""
    carry = ""
    for text in texts:
        text = carry + text
        cut = len(text)
        esc = text.rfind("\x1b", max(0, cut - 64))
        if esc != -1:
            cut = esc
        elif text.endswith("\r"):
            cut -= 1
        carry = text[cut:]
        for start in range(0, cut, WINDOW_CHARS):
            raw = text[start:min(cut, start + WINDOW_CHARS)]
            yield normalize(raw), len(raw)
    if carry:
        yield normalize(carry), len(carry)


# ------------------------------------------------------------------ scanning (bounded state)


class Scan:
    """What survives from window to window: best hits, literals seen, last exception lines."""

    def __init__(self, pitfalls: list[Pitfall]) -> None:
        self.pitfalls = pitfalls
        self.hits: dict[tuple[str, int], tuple[str, str]] = {}  # (id, symptom) -> line, device
        self.literals: set[str] = set()
        wanted = {s.requires for p in pitfalls for s in p.symptoms if s.requires}
        wanted |= {h.lower() for p in pitfalls for h in p.hints}
        wanted |= {lit.lower() for p in pitfalls for lit, _ in p.yields_to}
        self.wanted = wanted
        # looked for in every window: literals that decide which message form counts
        self.needed = {s.requires for p in pitfalls for s in p.symptoms if s.requires} | {
            lit.lower() for p in pitfalls for lit, _ in p.yields_to}
        self.frames: dict[tuple[str, str], str] = {}
        self.codes: dict[int, str] = {}
        self.exc_lines: deque[str] = deque(maxlen=40)
        self.last_exc_end = -1
        self.facts = FactCollector()
        self.chars = 0
        self.truncated = False  # stopped at MAX_READ_CHARS; the rest was not read

    def feed(self, window: str, offset: int) -> None:
        low = window.lower()
        slashed_low = low.replace("\\", "/") if "\\" in low else low
        find = Finder(low)
        slashed = find if slashed_low is low else Finder(slashed_low)
        for lit in self.needed - self.literals:
            if (slashed if "/" in lit else find).first(lit) != -1:
                self.literals.add(lit)
        first: dict[str, int] = {}  # anchor -> first position: each anchor looked up once
        evidence_here = False
        for p in self.pitfalls:
            for i, s in enumerate(p.symptoms):
                if s.anchor not in first:
                    first[s.anchor] = find.first(s.anchor)
                if first[s.anchor] == -1:
                    continue
                hit = _find(s, window, low, first[s.anchor])
                if hit is not None:
                    self.hits[(p.id, i)] = hit
                    evidence_here = True  # evidence in this window (a message form)
            for frame in p.frames:
                pos = slashed_low.rfind(frame.lower())
                if pos != -1:
                    self.frames[(p.id, frame)] = _line_at(window, pos)[-160:]
                    evidence_here = True
        if any(find.first(a) != -1 for a in CUDA_CODE_ANCHORS):
            for code, pos in cuda_error_codes(window):
                if code not in self.codes and len(self.codes) < 16:
                    self.codes[code] = _line_at(window, pos)
        before = self.last_exc_end
        self._exceptions(window, low, offset)
        # tie-breaking hint words are looked for only in windows that hold an error (a
        # message form, a frame, an exception line), not in every megabyte of a long log
        if evidence_here or self.last_exc_end != before:
            for lit in self.wanted - self.needed - self.literals:
                if (slashed if "/" in lit else find).first(lit) != -1:
                    self.literals.add(lit)
        self.facts.feed(window, low, find)

    def _exceptions(self, window: str, low: str, offset: int) -> None:
        """Keep the last 'SomeError: message' lines (found by keyword, not line by line)."""
        found: dict[int, str] = {}
        for kw in ("error", "exception", "warning", "interrupt"):
            pos, n = low.find(kw), 0
            while pos != -1 and n < 4000:
                n += 1
                after = low[pos + len(kw): pos + len(kw) + 6].lstrip(" \t")
                if after.startswith(":"):
                    start = window.rfind("\n", 0, pos) + 1
                    end = window.find("\n", pos)
                    end = len(window) if end == -1 else end
                    if end - start < 600 and offset + end > self.last_exc_end:
                        m = _EXC_LINE.match(window[start:end].rstrip())
                        if m:
                            found[end] = m.group(2).strip()
                pos = low.find(kw, pos + 1)
        for end in sorted(found):
            self.exc_lines.append(found[end])
            self.last_exc_end = offset + end


# Substrings shared by many literals: each is searched once per window, and a literal that
# contains one is then checked only where it occurs (startswith), not with its own scan.
_GATES = ("nccl", "cudnn", "cublas", "mps", "generator", "numpy", "pin_memory", "driver",
          "watchdog", "kernel", "launch", "figure", "pickl", "attribute", "implement",
          "support", "capabilit", "weight", "param", "rank", "model", "bound", "synchron",
          "process", "argument", "unknown", "instruction", "engine", "client", "epoch",
          "nan", "gpu", "memory", "cuda", "device", "tensor", "torch", "error", "warning")
_GATE_CAP = 2000  # more occurrences than this: a plain scan is cheaper


@functools.lru_cache(maxsize=2048)
def _gate(literal: str) -> tuple[str, int] | None:
    for g in _GATES:
        k = literal.find(g)
        if k != -1:
            return g, k
    return None


class Finder:
    """First/all positions of lowercase literals in one window, with shared gate scans:
    ~15 scans of the window instead of one per literal (~200)."""

    def __init__(self, low: str) -> None:
        self.low = low
        self._occ: dict[str, list[int] | None] = {}

    def _gate_positions(self, gate: str) -> list[int] | None:
        if gate not in self._occ:
            out: list[int] | None = None
            if self.low.count(gate) <= _GATE_CAP:  # else a plain scan per literal is cheaper
                out, pos = [], self.low.find(gate)
                while pos != -1:
                    out.append(pos)
                    pos = self.low.find(gate, pos + 1)
            self._occ[gate] = out
        return self._occ[gate]

    def first(self, literal: str) -> int:
        gk = _gate(literal)
        occ = self._gate_positions(gk[0]) if gk else None
        if gk is None or occ is None:
            return self.low.find(literal)
        for q in occ:
            p = q - gk[1]
            if p >= 0 and self.low.startswith(literal, p):
                return p
        return -1

    def all(self, literal: str, cap: int) -> list[int]:
        """Positions of ``literal`` (at most ``cap``), in order."""
        out: list[int] = []
        pos = self.first(literal)
        while pos != -1 and len(out) < cap:
            out.append(pos)
            pos = self.low.find(literal, pos + 1)
        return out


def _line_at(text: str, index: int) -> str:
    start = text.rfind("\n", max(0, index - 400), index) + 1
    end = text.find("\n", index, index + 400)
    return text[start: end if end != -1 else index + 400].strip()[:300]


def _find(symptom: Symptom, text: str, low: str, pos: int) -> tuple[str, str] | None:
    """(matched line, device named) for the last hit of ``symptom`` in this window, the
    anchor first seen at ``pos``."""
    rx = symptom.compiled()
    found = None
    hits = 0
    while pos != -1 and hits < _MAX_HITS_PER_ANCHOR:
        m = rx.search(text, max(0, pos - _SPAN_BEFORE), pos + len(symptom.anchor) + _SPAN_AFTER)
        if m:
            found = (_line_at(text, m.start()), m.groupdict().get("device") or "")
            pos = low.find(symptom.anchor, max(m.end(), pos + 1))
        else:
            pos = low.find(symptom.anchor, pos + 1)
        hits += 1
    return found


def scan(texts: Iterable[str], pitfalls: list[Pitfall] | None = None) -> Scan:
    """Read the whole stream window by window; the state stays bounded."""
    if pitfalls is None:
        from devcheck.pitfalls import all_pitfalls

        pitfalls = all_pitfalls()
    state = Scan(pitfalls)
    tail, offset = "", 0
    for piece, raw_len in _pieces(texts):
        if state.chars >= MAX_READ_CHARS:  # an endless input (/dev/zero, a stuck pipe)
            state.truncated = True
            break
        state.chars += raw_len
        window = tail + piece
        state.feed(window, offset - len(tail))
        offset += len(piece)
        tail = window[-OVERLAP_CHARS:]
    return state
