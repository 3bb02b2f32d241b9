"""The records ``devcheck lint`` passes around: rules, findings, edits, parse errors.

Positions follow ruff: ``line`` and ``col`` are 1-based, columns count characters (not the
UTF-8 bytes ``ast`` reports), and in a notebook ``line`` is the line inside ``cell`` (the
1-based index among the notebook's *code* cells).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devcheck.lint.scope import Context


class ToDict:
    """``to_dict()`` for the JSON renderer (devcheck.facts has one too; importing it here
    would cost ``devcheck lint`` a tenth of a second of start-up for one method)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Edit:
    """Replace the text between two positions (1-based lines, 0-based character columns).

    ``start == end`` is an insertion. Positions are in the analysed source (for a notebook,
    the joined code cells); the fixer maps them back to cells.
    """

    line: int
    col: int
    end_line: int
    end_col: int
    text: str


@dataclass(frozen=True)
class Hit:
    """What a rule reports, before noqa, cell mapping and rendering: node span + words."""

    line: int  # 1-based, in the analysed source
    col: int  # 0-based character column
    end_line: int
    end_col: int
    message: str
    fix: str
    edits: tuple[Edit, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One lint rule. Its ``id`` is a pitfall id: ``devcheck pitfalls show ID`` explains it.

    ``example`` is code the rule flags and ``fixed`` the same code corrected (docs/lint.md
    shows both, and the tests lint both). ``check`` is pure: an analysed module in, hits out.
    """

    id: str
    summary: str
    why: str
    example: str
    fixed: str
    check: Callable[[Context], Iterator[Hit]]
    autofix: str = ""  # what --fix does, empty when the rule has no mechanical fix
    notebook_only: bool = False
    script_only: bool = False
    # Words at least one of which the source must contain for the rule to apply (a cheap
    # pre-filter: every name a rule matches appears in the text, imported or spelled out).
    needs: tuple[str, ...] = ()
    # Other pitfalls whose cause this rule finds (explain: "lint can find a cause of this").
    covers: tuple[str, ...] = ()

    @property
    def fixable(self) -> bool:
        return bool(self.autofix)

    @property
    def pitfall_command(self) -> str:
        return f"devcheck pitfalls show {self.id}"


@dataclass(frozen=True)
class Finding(ToDict):
    """A rule's hit at a place in a file, ready to print or serialise."""

    rule: str
    path: str
    line: int
    col: int  # 1-based
    end_line: int
    end_col: int  # 1-based, exclusive
    message: str
    fix: str
    fixable: bool
    cell: int | None = None  # 1-based code-cell index in a notebook

    @property
    def location(self) -> str:
        cell = f"cell {self.cell}:" if self.cell is not None else ""
        return f"{self.path}:{cell}{self.line}:{self.col}"

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["pitfall"] = f"devcheck pitfalls show {self.rule}"
        return d


@dataclass(frozen=True)
class ParseError(ToDict):
    """A file (or notebook cell) that could not be read or parsed: reported, not fatal."""

    path: str
    message: str
    line: int | None = None
    col: int | None = None
    cell: int | None = None

    @property
    def location(self) -> str:
        cell = f"cell {self.cell}:" if self.cell is not None else ""
        pos = f"{self.line}:{self.col}:" if self.line is not None else ""
        return f"{self.path}:{cell}{pos}"
