"""Checkpoints: written atomically, read without running pickled code, one trainer per folder.

A checkpoint is ``<checkpoint-dir>/last.pt``, a ``torch.save`` dict written after each
complete epoch through :func:`devcheck.fileio.atomic_path` (temporary file, fsync, rename),
so a reader sees the previous epoch's file or the new one, never half of one. It is read
with ``weights_only=True``: a hostile file cannot run code, and anything that is not a
checkpoint of ours becomes one :class:`CheckpointError` line naming the file.

Two trainers on one folder would overwrite each other's ``last.pt`` and both report success.
:class:`CheckpointLock` prevents that with ``last.pt.lock``, which names the holder's pid;
the lock itself is a kernel lock (POSIX ``lockf``), so a holder killed with ``kill -9``
releases it, even while its DataLoader workers still run, and the next trainer takes it over
(and says whose stale lock it was)."""

from __future__ import annotations

import errno
import io
import os
import pickle
import socket
import stat
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from devcheck.fileio import atomic_write_bytes
from softmax.model import Model, make_model

CHECKPOINT_NAME = "last.pt"
LOCK_NAME = "last.pt.lock"
FORMAT = 2  # 2: adds "loader" (which loader's shuffle state "generator" is)
REQUIRED_KEYS = ("epoch", "model", "state")
MODEL_KINDS = ("scratch", "concise")
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # no kernel locks here
_FIX = "Fix: pass a file written by `softmax train` (runs/softmax/last.pt by default)"


class CheckpointError(Exception):
    """A checkpoint is missing, damaged, unsafe or of another model; the message says which."""


class CheckpointLockError(CheckpointError):
    """Another live trainer holds the checkpoint folder."""


# -- writing ---------------------------------------------------------------------------------
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Temp file (real suffix kept) + fsync + rename; errors name ``path``, leave no temp.

    Serialised in memory first (a few dozen kB): torch.save reports a full disk or
    ``ulimit -f`` as "enforce fail ... unexpected pos", without errno or file name, while a
    plain write raises the OSError that :class:`devcheck.fileio.OutputError` explains."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue(), "checkpoint")


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries of ``last.pt`` left by a killed run (call with the lock held)."""
    stem, suffix = Path(CHECKPOINT_NAME).stem, Path(CHECKPOINT_NAME).suffix
    for pattern in (f".{stem}.*.tmp{suffix}", f".{CHECKPOINT_NAME}.*.tmp"):  # new, old names
        for stale in directory.glob(pattern):
            stale.unlink(missing_ok=True)


# -- reading ---------------------------------------------------------------------------------
def _why_unloadable(exc: BaseException) -> tuple[str, bool]:
    """(what torch found, whether the file asks to run code), without torch's advice.

    torch's message suggests ``weights_only=False``, which for a hostile file means running
    its code: that advice is never passed on; only the offending detail is."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    unsafe = next((ln for ln in lines if "GLOBAL" in ln), None)
    if unsafe is not None:
        return unsafe.rstrip("."), True
    detail = next((ln for ln in lines if ln.startswith("Unsupported")), None)
    if detail is None and isinstance(exc, pickle.UnpicklingError | EOFError | KeyError):
        detail = "its bytes are not a torch.save archive"
    if detail is None:
        detail = lines[0] if lines and not lines[0].startswith("Weights only") else \
            type(exc).__name__
    return detail.rstrip("."), False


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """weights_only=True (no pickled code) and map_location: a GPU checkpoint loads on a CPU.

    Anything that is not a complete checkpoint of ours (truncated, another program's pickle,
    code objects, a wrong ``epoch``) becomes one CheckpointError naming the file."""
    _regular_file(path)
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": noise for a user
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=device, weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc}); "
                              f"expected a readable file. {_FIX}") from None
    except Exception as exc:  # torch raises many types for foreign bytes (KeyError, ...)
        detail, unsafe = _why_unloadable(exc)
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} is not a `softmax train` checkpoint and is unsafe to load: "
                f"it asks to run code ({detail}), so it was refused unread; expected tensors "
                f"and plain data only. {_FIX}") from None
        raise CheckpointError(f"checkpoint {path} cannot be loaded: it is not a complete "
                              f"torch.save file ({detail}); expected a complete file written "
                              f"by `softmax train`. Fix: pass another file, or delete it to "
                              f"start over") from None
    check_payload(payload, path)
    return payload


def _regular_file(path: Path) -> None:
    """torch.load opens what it is given: a FIFO blocks forever (holding the folder's lock),
    /dev/zero never ends. Only a regular file can be a checkpoint."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc}); "
                              f"expected a readable file. {_FIX}") from None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a directory"
                if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or
                stat.S_ISBLK(mode) else "not a regular file")
        raise CheckpointError(f"checkpoint {path} is {kind}; expected a regular file written "
                              f"by `softmax train`. {_FIX}")


def check_payload(payload: object, source: Path | str) -> None:
    """Keys present and ``epoch`` a whole number >= 1, or one CheckpointError line."""
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        found = (f"keys {sorted(map(str, payload))}" if isinstance(payload, dict)
                 else f"a {type(payload).__name__}")
        raise CheckpointError(f"checkpoint {source} is not a `softmax train` checkpoint: found "
                              f"{found}; expected a dict with keys "
                              f"{', '.join(REQUIRED_KEYS)}. {_FIX}")
    assert isinstance(payload, dict)
    epoch = payload["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise CheckpointError(f"checkpoint {source} has epoch {epoch!r}; expected a whole "
                              f"number >= 1 (the last complete epoch). The file is damaged "
                              f"or not ours. {_FIX}, or delete it to start over")


def shuffle_state(payload: dict[str, Any], source: Path | str) -> torch.Tensor:
    """The saved state of the generator that orders the batches (needed to resume exactly)."""
    state = payload.get("generator")
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
        seen = ("no 'generator' key" if "generator" not in payload
                else f"'generator' = a {type(state).__name__}")
        raise CheckpointError(f"checkpoint {source} has {seen}; expected the shuffling "
                              f"generator's state (a 1-D uint8 tensor) to resume the same "
                              f"batch order. Fix: train again without --resume, or pass a "
                              f"--checkpoint-dir holding a file written by `softmax train`")
    return state.cpu()  # map_location may have moved it


def load_model_state(model: Model, payload: dict[str, Any], source: Path | str) -> None:
    """Load the payload's parameters into ``model``, refusing another model's shapes."""
    state = payload["state"]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    seen = ({str(k): tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
             for k, v in state.items()} if isinstance(state, dict) else type(state).__name__)
    if seen != expected:
        raise CheckpointError(f"checkpoint {source} holds a {payload['model']!r} state with "
                              f"{seen}; expected {expected}. Fix: pass a checkpoint written "
                              f"by this version of `softmax train`")
    model.load_state_dict(state)


def model_from_checkpoint(payload: dict[str, Any], device: torch.device,
                          source: Path | str = "checkpoint") -> Model:
    kind = str(payload["model"])
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"checkpoint {source} holds a model of kind {kind!r}; expected "
                              f"one of {', '.join(MODEL_KINDS)}. {_FIX}")
    model = make_model(kind, device)
    load_model_state(model, payload, source)
    return model


# -- one trainer per folder ------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        import psutil

        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read_holder(path: Path, fd: int | None = None) -> tuple[int | None, str]:
    """(pid, description) from a lock file's one line ``pid host started``.

    ``fd``: read through the descriptor we hold: opening and closing the path again would
    release our POSIX lock (fcntl locks end at the first close of any descriptor of the file)."""
    try:
        if fd is not None:
            text = os.pread(fd, 512, 0).decode("utf-8", errors="replace").strip()
        else:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None, "unknown holder"
    parts = text.split(maxsplit=2)
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    host = parts[1] if len(parts) > 1 else "?"
    since = parts[2] if len(parts) > 2 else "?"
    return pid, f"pid {pid} on {host}, since {since}" if pid else f"content {text[:40]!r}"


_HELD: dict[str, str] = {}  # lock files this process holds (real path -> its holder text)
_HELD_GUARD = threading.Lock()


class CheckpointLock:
    """An exclusive POSIX lock (``lockf``) on ``<dir>/last.pt.lock``, whose text names the
    holder.

    Why a kernel lock and not "create if absent": the kernel drops it when its holder
    dies, so a stale lock (holder killed with -9) can never block a new run, and a
    reused pid cannot fake a live holder. Why ``lockf`` and not ``flock``: a flock
    belongs to the open file, which forked DataLoader workers share; they outlive a
    SIGKILLed trainer by seconds and kept its lock, so the next run was refused naming a
    dead pid. A POSIX lock belongs to the process and is not inherited by fork. The file
    is removed on release; an acquirer checks that the file it locked is still the one
    at the path (else it retries), so a release racing an acquire cannot let two
    trainers in.
    """

    def __init__(self, directory: Path | str) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None
        self.took_over: str | None = None  # the stale holder replaced, if any
        self._key = ""

    def acquire(self) -> CheckpointLock:
        # A POSIX lock is per process: a second lock here would succeed, and its close would
        # drop the first one's. Locks held by this process are therefore also kept here.
        self._key = os.path.realpath(self.path)
        with _HELD_GUARD:
            if self._key in _HELD:
                raise self._busy(_HELD[self._key] + ", in this very process")
            _HELD[self._key] = f"pid {os.getpid()}"
        try:
            return self._acquire()
        except BaseException:
            with _HELD_GUARD:
                _HELD.pop(self._key, None)
            raise

    def _acquire(self) -> CheckpointLock:
        try:
            import fcntl
        except ImportError:  # Windows: no lockf; the holder's pid decides, as on NFS below
            fcntl = None  # type: ignore[assignment]

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                if fcntl is None:
                    raise OSError(errno.ENOLCK, "no lockf on this platform")
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in _NO_FLOCK:  # some network filesystems: the pid decides
                    pid, _ = _read_holder(self.path)
                    if pid is None or pid == os.getpid() or not _pid_alive(pid):
                        self._fd = fd
                        self._claim()
                        return self
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, *_NO_FLOCK):
                    raise
                raise self._busy() from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # released and removed between our open and our lock: retry
                os.close(fd)
                continue
            self._fd = fd
            self._claim()
            return self
        raise CheckpointLockError(f"--checkpoint-dir {self.path.parent}: could not take the "
                                  f"lock {self.path} after 20 tries (it keeps changing); "
                                  f"expected it to settle. Fix: check for other trainers")

    def _busy(self, holder: str | None = None) -> CheckpointLockError:
        if holder is None:
            _, holder = _read_holder(self.path)
        return CheckpointLockError(
            f"--checkpoint-dir {self.path.parent} is in use by another `softmax train` "
            f"({holder}; lock file {self.path}); expected one trainer per checkpoint folder, "
            f"or the two would overwrite each other's last.pt. Fix: wait for it, stop it, or "
            f"pass another --checkpoint-dir")

    def _claim(self) -> None:
        assert self._fd is not None
        pid, holder = _read_holder(self.path, self._fd)
        if pid is not None and pid != os.getpid():
            state = "no longer running" if not _pid_alive(pid) else "not holding it"
            self.took_over = f"{holder} ({state})"
        host, since = socket.gethostname(), time.strftime("%Y-%m-%dT%H:%M:%S")
        line = f"{os.getpid()} {host} {since}\n"
        with _HELD_GUARD:
            _HELD[self._key] = f"pid {os.getpid()} on {host}, since {since}"
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, line.encode())

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: see the class doc
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        with _HELD_GUARD:
            _HELD.pop(self._key, None)

    def __enter__(self) -> CheckpointLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["CHECKPOINT_NAME", "LOCK_NAME", "CheckpointError", "CheckpointLock",
           "CheckpointLockError", "check_payload", "load_checkpoint", "load_model_state",
           "model_from_checkpoint", "remove_stale_temporaries", "save_checkpoint",
           "shuffle_state"]
