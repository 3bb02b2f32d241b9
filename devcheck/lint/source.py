"""Reading what ``devcheck lint`` checks: ``.py`` files, Jupyter notebooks, directories.

A notebook is analysed as one module made of its code cells in order (a notebook runs its
cells in one namespace, so ``set_default_device`` in cell 1 matters to a DataLoader in cell
5), with IPython-only lines (``%magic``, ``!shell``, ``x = !cmd``, ``obj?``) replaced by
``pass`` so every cell parses; positions map back to ``(cell, line)``. A cell that still does
not parse is reported and left out; the other cells are checked.
"""

from __future__ import annotations

import ast
import errno
import io
import json
import os
import re
import select
import stat
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcheck.lint._types import ParseError

# Directories never worth linting: environments, VCS data, caches, build output.
SKIP_DIRS = frozenset({
    ".venv", "venv", ".env", "env", ".git", ".hg", ".svn", "__pycache__", "build", "dist",
    "node_modules", ".tox", ".nox", ".mypy_cache", ".ruff_cache", ".pytest_cache",
    ".ipynb_checkpoints", "site-packages", ".eggs",
})
_NEWLINE = re.compile(r"\r\n|\r|\n")
_MAGIC = re.compile(r"^(\s*)(?:[%!]|[\w.\[\]'\" ,]+=\s*[%!])")
_HELP = re.compile(r"^(\s*)[\w.]+\?{1,2}\s*$")
# Cell magics whose body is still Python.
_PYTHON_CELL_MAGICS = ("%%time", "%%timeit", "%%capture", "%%prun", "%%debug")


@dataclass
class Cell:
    """One code cell: where it sits in the notebook and in the analysed text."""

    number: int  # 1-based among code cells (markdown cells are not counted)
    index: int  # position in the notebook's "cells" list
    start_line: int  # 1-based first line in the analysed text
    n_lines: int
    source: str  # the cell's original source


@dataclass
class Source:
    """A file ready for the rules: analysed text, tree, and the way back to the file."""

    path: str
    kind: str  # "py" or "ipynb"
    text: str  # what was parsed (notebook: joined code cells, magics blanked)
    lines: list[str] = field(default_factory=list)
    tree: ast.Module | None = None
    errors: list[ParseError] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    notebook: dict[str, Any] | None = None  # the parsed JSON, kept for --fix
    newline: str = "\n"
    encoding: str = "utf-8"
    json_indent: int = 1  # a notebook's JSON indentation, kept when --fix writes it back

    def cell_at(self, line: int) -> tuple[int | None, int]:
        """(code-cell number, line inside it) for a line of the analysed text."""
        if self.kind != "ipynb":
            return None, line
        for cell in self.cells:
            if cell.n_lines and cell.start_line <= line < cell.start_line + cell.n_lines:
                return cell.number, line - cell.start_line + 1
        return None, line


def split_lines(text: str) -> list[str]:
    """Lines as ``ast`` numbers them (\\r\\n, \\r and \\n all end a line), without endings."""
    return _NEWLINE.split(text)


def _syntax_error(path: str, exc: SyntaxError, line_offset: int = 0,
                  cell: int | None = None) -> ParseError:
    line = (exc.lineno or 1) - line_offset if exc.lineno is not None else None
    return ParseError(path=path, message=f"cannot parse: {exc.msg}", line=line,
                      col=exc.offset, cell=cell)


def decode_python(data: bytes) -> tuple[str, str]:
    """Text and encoding of a .py file, honouring a PEP 263 coding line."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = data.decode(encoding)
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, encoding


def read_python(path: str, data: bytes) -> Source:
    try:
        text, encoding = decode_python(data)
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        return Source(path, "py", "", errors=[ParseError(
            path, f"cannot decode: {exc}; expected UTF-8 or a valid '# coding:' line")])
    src = Source(path, "py", text, split_lines(text), encoding=encoding,
                 newline=_newline_of(text))
    try:
        src.tree = ast.parse(text, filename=path, type_comments=False)
    except SyntaxError as exc:
        src.errors.append(_syntax_error(path, exc))
    except ValueError as exc:  # null bytes
        src.errors.append(ParseError(path, f"cannot parse: {exc}"))
    except (RecursionError, MemoryError):
        src.errors.append(ParseError(path, "cannot parse: nested too deeply for Python's "
                                     "parser; split the expression"))
    return src


def _newline_of(text: str) -> str:
    m = _NEWLINE.search(text)
    return m.group(0) if m else "\n"


def blank_magics(cell_source: str) -> str:
    """The cell with IPython-only lines turned into ``pass`` (same line count and indent)."""
    lines = split_lines(cell_source)
    first = lines[0].strip() if lines else ""
    if first.startswith("%%"):
        python_body = first.split()[0] in _PYTHON_CELL_MAGICS
        return "\n".join(["pass"] + (lines[1:] if python_body else ["" for _ in lines[1:]]))
    out = []
    for line in lines:
        m = _MAGIC.match(line) or _HELP.match(line)
        out.append(f"{m.group(1)}pass" if m else line)
    return "\n".join(out)


def _cell_text(cell: dict[str, Any]) -> str | None:
    """The cell's code; None when 'source' is neither a string nor a list of strings."""
    src = cell.get("source", "")
    if isinstance(src, str):
        return src
    if isinstance(src, list) and all(isinstance(part, str) for part in src):
        return "".join(src)
    return None


def read_notebook(path: str, data: bytes) -> Source:
    try:
        nb = json.loads(data.decode("utf-8-sig"))
        if not isinstance(nb, dict):
            raise TypeError(f"the document is a JSON {type(nb).__name__}, not an object")
        cells_json = nb["cells"]
        if not isinstance(cells_json, list):
            raise TypeError("'cells' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        return Source(path, "ipynb", "", errors=[ParseError(
            path, f"not a Jupyter notebook ({exc}); expected nbformat 4 JSON with 'cells'")])
    parts: list[str] = []
    src = Source(path, "ipynb", "", notebook=nb, json_indent=_json_indent(data))
    line = 1
    number = 0
    for index, cell in enumerate(cells_json):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        number += 1
        text = _cell_text(cell)
        if text is None:
            src.errors.append(ParseError(path, "not a Jupyter notebook: this cell's 'source' "
                                         "is not a string or a list of strings", cell=number))
            text = ""
        body = blank_magics(text).rstrip("\n")
        n = len(split_lines(body)) if body else 0
        try:
            ast.parse(body or "pass")
        except (RecursionError, MemoryError):
            src.errors.append(ParseError(path, "cannot parse: nested too deeply", cell=number))
            body = "\n" * max(n - 1, 0)
        except SyntaxError as exc:
            src.errors.append(_syntax_error(path, exc, cell=number))
            body = "\n" * max(n - 1, 0)  # keep the numbering, drop the code
        except ValueError as exc:
            src.errors.append(ParseError(path, f"cannot parse: {exc}", cell=number))
            body = "\n" * max(n - 1, 0)
        src.cells.append(Cell(number, index, line, n, text))
        if n:
            parts.append(body + "\n")
            line += n
    src.text = "".join(parts)
    src.lines = split_lines(src.text)
    try:
        src.tree = ast.parse(src.text, filename=path)
    except (RecursionError, MemoryError):
        src.errors.append(ParseError(path, "cannot parse: nested too deeply for Python's "
                                     "parser; split the expression"))
    except SyntaxError as exc:  # cells parse alone but not together (rare): say where
        cell, cline = src.cell_at(exc.lineno or 1)
        src.errors.append(ParseError(path, f"cannot parse: {exc.msg}", cline, exc.offset, cell))
    return src


def _json_indent(data: bytes) -> int:
    m = re.match(rb"\s*[{\[]\r?\n( +)", data)
    return len(m.group(1)) if m else 1


# Python's parser needs ~150x a file's size in memory (a 20 MB generated file: 3.2 GB):
# past this, a file is reported as not linted rather than risk the machine.
MAX_FILE_BYTES = 10 * 1024 * 1024
PIPE_IDLE_S = 30.0  # `devcheck lint <(cmd)`: how long a pipe may stay silent


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


class _NotLinted(OSError):
    """A file devcheck will not lint (too big, not source, an empty or silent pipe): its
    message is the whole story, with no "check the path and its permissions"."""


def _read_pipe(path: Path) -> bytes:
    """A pipe or FIFO (``lint <(git show HEAD:x.py)``): read to its end without blocking
    forever on one nobody writes to. Raises OSError with the reason."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks, size = [], 0
        while True:
            ready, _, _ = select.select([fd], [], [], PIPE_IDLE_S)
            if not ready:
                raise _NotLinted(errno.ETIMEDOUT, f"the pipe gave no data for {PIPE_IDLE_S:g} s")
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise _NotLinted(errno.EFBIG, f"more than {_size(MAX_FILE_BYTES)} came through "
                                           "the pipe")
            chunks.append(chunk)
    finally:
        os.close(fd)
    if not size:
        raise _NotLinted(errno.EPIPE, "a pipe (FIFO) that nobody wrote to")
    return b"".join(chunks)


def _read(path: Path) -> bytes:
    st = path.stat()
    if stat.S_ISFIFO(st.st_mode):
        return _read_pipe(path)
    if not stat.S_ISREG(st.st_mode):
        raise _NotLinted(errno.EINVAL, f"{_kind(st.st_mode)}, not a source file")
    size = st.st_size
    if size > MAX_FILE_BYTES:
        raise _NotLinted(errno.EFBIG, f"{_size(size)} is over the {_size(MAX_FILE_BYTES)} "
                                   "devcheck lints per file (generated code or data? lint the "
                                   "code that makes it)")
    return path.read_bytes()


def read_source(path: Path, display: str | None = None) -> Source:
    """Read and parse one file; unreadable or unparsable files come back with ``errors``."""
    name = display or str(path)
    try:
        data = _read(path)
    except OSError as exc:
        why = exc.strerror or str(exc)
        fix = "" if isinstance(exc, _NotLinted) else "; check the path and its permissions"
        return Source(name, "py", "", errors=[ParseError(name, f"cannot read: {why}{fix}")])
    if path.suffix == ".ipynb":
        return read_notebook(name, data)
    return read_python(name, data)


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Files to lint: each named file, and every .py/.ipynb under each named directory.

    Directories are walked in sorted order (stable output) and ``SKIP_DIRS``, hidden
    directories and ``*.egg-info`` are skipped; a missing path raises FileNotFoundError.
    """
    seen: set[Path] = set()
    for root in paths:
        if not root.exists():
            raise FileNotFoundError(str(root))
        if root.is_dir():
            candidates: Iterator[Path] = _walk(root)
        else:  # any named non-directory is read: a pipe from `<(cmd)` too, or reported
            candidates = iter([root])
        for f in candidates:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                yield f


def _walk(root: Path) -> Iterator[Path]:
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError:
        return
    for p in entries:
        if p.is_dir():
            if p.name in SKIP_DIRS or p.name.endswith(".egg-info") or (
                    p.name.startswith(".") and p.name not in (".", "..")):
                continue
            if not p.is_symlink():
                yield from _walk(p)
        elif p.suffix in (".py", ".ipynb") and p.is_file():
            yield p
