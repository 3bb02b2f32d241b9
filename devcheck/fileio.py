"""Writing output files without ever leaving a half-written one, or a stray temporary.

One helper for every writer (checkpoints, metrics, plots, predictions, the pytest JSON):
the temporary file sits next to the target (same filesystem, so the rename is atomic) and
keeps the target's real suffix last, because writers such as matplotlib pick the format
from the name. Any failure removes the temporary and raises :class:`OutputError`, which
names the file the user asked for, not the temporary.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f?)",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "it is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ENOENT: "its directory does not exist",
}


class OutputError(OSError):
    """An output file could not be written; the message names it and says what to do."""

    def __init__(self, what: str, path: Path | str, reason: str, fix: str) -> None:
        self.what, self.path, self.reason, self.fix = what, str(path), reason, fix
        super().__init__(f"cannot write {what} {self.path}: {reason}; {fix}")

    def __str__(self) -> str:
        return f"cannot write {self.what} {self.path}: {self.reason}; {self.fix}"


def describe_os_error(exc: BaseException) -> str:
    """A short reason for an OS error, in words first (errno's own text after)."""
    if isinstance(exc, OSError) and exc.errno in _REASONS:
        return f"{_REASONS[exc.errno]} ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def advice(exc: BaseException, what: str) -> str:
    """What to do about a failed write, by its cause (free space does not fix a permission)."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"free space (or raise the limit) or choose another path for the {what}"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"check the permissions or choose a writable path for the {what}"
    return f"choose another path for the {what}"


def check_writable(path: Path | str, what: str = "output") -> Path:
    """Fail before any work when ``path`` can never be written (a directory, no parent,
    a read-only folder). Creates no directories: a typo must not create ``/nonexistent/``."""
    p = Path(path)
    fix = f"choose another path for the {what}"
    if p.exists() and p.is_dir():
        raise OutputError(what, p, "it is a directory", f"give a file name, e.g. {p / 'out'}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        above = parent
        while not above.exists() and above != above.parent:
            above = above.parent
        if above.exists() and not above.is_dir():  # below a regular file: mkdir cannot help
            raise OutputError(what, p, f"{above} is a file, not a folder", fix)
        raise OutputError(what, p, f"its directory {parent} does not exist",
                          f"create it first (mkdir -p {parent}) or {fix}")
    if not parent.is_dir():
        raise OutputError(what, p, f"{parent} is not a directory", fix)
    if not os.access(parent, os.W_OK | os.X_OK) and not (p.exists() and os.access(p, os.W_OK)):
        why = "is on a read-only filesystem" if read_only_fs(parent) else \
            "is not writable (permission denied)"
        raise OutputError(what, p, f"{parent} {why}", fix)
    return p


def read_only_fs(path: Path | str) -> bool:
    """Is ``path`` on a filesystem mounted read-only? (``os.access`` says only "no".)"""
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):  # Windows has no statvfs
        return False


def temp_name(path: Path) -> Path:
    """``curves.png`` -> ``.curves.<pid>.tmp.png``: hidden, unique per process, real suffix."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: Path | str, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    On any exception the temporary is removed; OS errors become :class:`OutputError`
    naming ``path`` (other exceptions pass through unchanged, after the clean-up).
    """
    target = Path(path)
    if target.is_symlink():
        # write where the link points (a dangling link too: it names the file to create);
        # a rename onto the link would replace the link itself
        target = Path(os.path.realpath(target))
    if target.exists() and not target.is_file():  # /dev/full, a fifo, /proc/...: no rename
        try:
            yield target
        except OSError as exc:
            raise OutputError(what, path, describe_os_error(exc),
                              f"choose a regular file for the {what}") from exc
        return
    tmp = temp_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise OutputError(what, path, describe_os_error(exc), advice(exc, what)) from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write_bytes(path: Path | str, data: bytes, what: str = "output") -> Path:
    with atomic_path(path, what) as tmp:
        _write_and_sync(tmp, lambda f: f.write(data))
    return Path(path)


def atomic_write_text(path: Path | str, text: str, what: str = "output") -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), what)


def _write_and_sync(path: Path, write: Callable[..., object]) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        try:
            os.fsync(f.fileno())
        except OSError as exc:  # /dev/full reports ENOSPC here; ttys and pipes EINVAL
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
