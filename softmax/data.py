"""Fashion-MNIST: find it, verify it, and serve it either the book's way or resident on a device.

Where the data comes from, in order (the first that works wins):

1. ``--data-root DIR`` (else ``$SOFTMAX_DATA_ROOT``, else ``./data``): torchvision's layout,
   ``DIR/FashionMNIST/raw/<four unpacked IDX files>``;
2. the four original ``.gz`` archives already in ``DIR/FashionMNIST/raw`` or ``DIR``;
3. a local mirror of those archives (Debian's ``/usr/share/datasets/fashion-mnist``, or the
   directories in ``$SOFTMAX_MIRROR``), verified and unpacked into ``DIR``;
4. torchvision's own download (skipped when ``$SOFTMAX_OFFLINE=1``).

Archives are verified against the published md5 of the archive; a re-packed archive (Debian
strips the file name from the gzip header, which changes the archive's md5 but not its
content) is accepted when its *content* matches the published md5 of the unpacked file.
Unpacked files are checked by header magic and size, which catches truncation cheaply.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shlex
import signal
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from devcheck.fileio import atomic_write_bytes

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle boot")
NUM_INPUTS = 28 * 28
NUM_CLASSES = len(CLASSES)
DEBIAN_MIRROR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_MAGIC = 0x00000803  # IDX: unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # IDX: unsigned bytes, 1 dimension


@dataclass(frozen=True)
class IdxSpec:
    """One of the four files; md5s as published by the dataset's authors (and torchvision)."""

    name: str
    archive_md5: str
    content_md5: str
    magic: int
    count: int

    @property
    def size_bytes(self) -> int:
        header = 16 if self.magic == IMAGE_MAGIC else 8
        return header + self.count * (NUM_INPUTS if self.magic == IMAGE_MAGIC else 1)


FILES = (
    IdxSpec("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "f4a8712d7a061bf5bd6d2ca38dc4d50a", IMAGE_MAGIC, 60000),
    IdxSpec("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe",
            "9018921c3c673c538a1fc5bad174d6f9", LABEL_MAGIC, 60000),
    IdxSpec("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79",
            "8181f5470baa50b63fa0f6fddb340f0a", IMAGE_MAGIC, 10000),
    IdxSpec("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310",
            "15d484375f8d13e6eb1aabb0c3f46965", LABEL_MAGIC, 10000),
)


class DataError(Exception):
    """The dataset is missing or damaged; the message names the file and the way out."""


def default_workers() -> int:
    """DataLoader workers: the book's 4, but never more than the CPUs we may use.

    Why: torch warns ("This DataLoader will create 4 worker processes in total. Our
    suggested max number of worker in current system is 2") when workers exceed the CPUs
    in the affinity mask, and extra workers only fight for the same cores."""
    from softmax.devices import cpu_count  # the affinity mask where the OS has one

    return min(4, cpu_count())


def default_root() -> Path:
    return Path(os.environ.get("SOFTMAX_DATA_ROOT") or "data")


def mirror_dirs() -> list[Path]:
    env = os.environ.get("SOFTMAX_MIRROR")
    if env is not None:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [DEBIAN_MIRROR]


def raw_dir(root: Path) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def check_idx_file(path: Path, spec: IdxSpec) -> None:
    """Header magic, item count, image shape and exact size: enough to catch truncation."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(16 if spec.magic == IMAGE_MAGIC else 8)
    kind = "image" if spec.magic == IMAGE_MAGIC else "label"
    expected = (f"an IDX {kind} file starting with magic 0x{spec.magic:08x} and count "
                f"{spec.count}, {spec.size_bytes} bytes long")
    fix = "delete it and rerun: it is re-created from the .gz archives"
    if len(header) < 8:
        raise DataError(f"{path}: expected {expected}; found only {size} bytes; {fix}")
    magic, count = struct.unpack(">II", header[:8])
    if magic != spec.magic or count != spec.count:
        raise DataError(f"{path}: expected {expected}; found magic 0x{magic:08x} and count "
                        f"{count}; {fix}")
    if spec.magic == IMAGE_MAGIC:
        rows, cols = struct.unpack(">II", header[8:16]) if len(header) == 16 else (0, 0)
        if (rows, cols) != (28, 28):
            raise DataError(f"{path}: expected 28x28 images; found {rows}x{cols}; {fix}")
    if size != spec.size_bytes:
        state = "truncated" if size < spec.size_bytes else "too long"
        raise DataError(f"{path}: expected {expected}; found {size} bytes ({state}); {fix}")


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def verify_archive(path: Path, spec: IdxSpec) -> bytes:
    """Return the unpacked content of a verified archive, or raise naming what was expected."""
    data = path.read_bytes()
    if _md5(data) != spec.archive_md5:
        try:
            content = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{path}: expected a gzip archive with md5 {spec.archive_md5}; found md5 "
                f"{_md5(data)} and it does not unpack ({exc}): the file is damaged or "
                f"truncated; replace it with a fresh copy") from None
        if _md5(content) != spec.content_md5:
            raise DataError(
                f"{path}: expected md5 {spec.archive_md5} (or unpacked content md5 "
                f"{spec.content_md5}); found md5 {_md5(data)} (content {_md5(content)}): "
                f"the file is damaged or not Fashion-MNIST; replace it with a fresh copy")
        return content
    return gzip.decompress(data)


def _write_atomic(path: Path, data: bytes) -> None:
    """Through devcheck.fileio: a full disk or ``ulimit -f`` while unpacking (47 MB for the
    training images) leaves no temporary behind, and the error names the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, "Fashion-MNIST file")


def _unpack_from(directory: Path, root: Path) -> bool:
    """Unpack the four archives found in ``directory`` into ``root``; False if any is absent."""
    archives = [directory / f"{spec.name}.gz" for spec in FILES]
    if not all(a.is_file() for a in archives):
        return False
    for archive, spec in zip(archives, FILES, strict=True):
        target = raw_dir(root) / spec.name
        if target.is_file():
            continue
        _write_atomic(target, verify_archive(archive, spec))
    return True


def _unpacked_ok(root: Path) -> bool:
    paths = [raw_dir(root) / spec.name for spec in FILES]
    if not any(p.exists() for p in paths):
        return False
    for path, spec in zip(paths, FILES, strict=True):
        if path.exists():
            check_idx_file(path, spec)  # a damaged file is an error, not a reason to look on
    return all(p.exists() for p in paths)


def _download(root: Path) -> str | None:
    """torchvision's download; returns why it failed, or None."""
    if os.environ.get("SOFTMAX_OFFLINE") == "1":
        return "skipped ($SOFTMAX_OFFLINE=1)"
    import socket

    import torchvision

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
    except Exception as exc:  # any network/HTTP/disk failure is reported, not raised
        return f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    finally:
        socket.setdefaulttimeout(old)
    return None


def shown(path: Path) -> str:
    """A path as a beginner would type it: ``./data`` rather than ``data``."""
    text = str(path)
    if path.is_absolute() or text.startswith("."):
        return text
    return os.path.join(".", text)


def check_folders(root: Path) -> None:
    """The root, ``FashionMNIST`` and ``raw`` must be folders where they exist.

    Why first: a *file* named ``raw`` (a download saved under the folder's name) made every
    later step fail for a reason of its own ("File exists" while unpacking, or "not found"
    with the file right there); the one thing to do is to move it away."""
    expected = {
        root: "the dataset root folder (it holds FashionMNIST/raw/)",
        root / "FashionMNIST": "a folder holding raw/",
        raw_dir(root): "a folder holding the four IDX files or their .gz archives",
    }
    for path, what in expected.items():
        if os.path.lexists(path) and not path.is_dir():
            kind = "a link to nothing" if not path.exists() else "a file"
            moved = shlex.quote(str(path))
            raise DataError(f"{path} is {kind}, not a folder; expected {what}. Fix: move it "
                            f"away (mv {moved} {moved}.bak) and rerun, or pass another "
                            f"--data-root")


def locate(data_root: str | Path | None = None,
           log: Callable[[str], None] | None = None) -> Path:
    """Return a root that torchvision's FashionMNIST(root) can read, preparing it if needed.

    ``log``, if given, is called once with one line saying where the data came from (and
    where it was unpacked): 53 MB appearing in ``./data`` should never be a surprise."""
    root = Path(data_root) if data_root is not None else default_root()
    say = log if log is not None else (lambda _line: None)
    check_folders(root)
    if _unpacked_ok(root):
        say(f"using Fashion-MNIST from {shown(raw_dir(root))}")
        return root
    for directory in (raw_dir(root), root):
        if directory.is_dir() and _unpack_from(directory, root):
            if _unpacked_ok(root):
                say(f"using the Fashion-MNIST archives in {shown(directory)}, unpacked to "
                    f"{shown(raw_dir(root))}")
                return root
    mirrors = mirror_dirs()
    for mirror in mirrors:
        if _unpack_from(mirror, root) and _unpacked_ok(root):
            origin = ("Debian's dataset-fashion-mnist" if mirror == DEBIAN_MIRROR
                      else "a mirror listed in $SOFTMAX_MIRROR")
            say(f"using Fashion-MNIST from {mirror} ({origin}), unpacked to {shown(root)}")
            return root
    why = _download(root)
    if why is None and _unpacked_ok(root):
        say(f"downloaded Fashion-MNIST with torchvision into {shown(root)}")
        return root
    names = ", ".join(f"{s.name}.gz" for s in FILES)
    raise DataError(
        f"Fashion-MNIST not found. Looked for: (1) the torchvision layout "
        f"{raw_dir(root)}/<4 IDX files> (set --data-root or $SOFTMAX_DATA_ROOT to change the "
        f"root); (2) the archives {names} in {raw_dir(root)} or {root}; (3) a local mirror of "
        f"them in {os.pathsep.join(map(str, mirrors)) or '(none)'} (Debian: apt install "
        f"dataset-fashion-mnist; or set $SOFTMAX_MIRROR); (4) torchvision's download: {why}.")


@dataclass(frozen=True)
class FashionTensors:
    """The whole dataset as uint8 images (N, 784) and int64 labels, on one device."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def check_labels(targets: torch.Tensor, root: Path, train: bool) -> None:
    """Every label a class index, checked once on the host when the data is read.

    Why here: the size check cannot see a damaged byte inside an unpacked label file, and an
    out-of-range label fails deep in the loss (an IndexError on the CPU, a device-side assert
    that poisons the CUDA context on a GPU) instead of naming the file."""
    bad = ((targets < 0) | (targets >= NUM_CLASSES)).nonzero().flatten()
    if len(bad):
        first = int(bad[0])
        spec = next(f for f in FILES if f.magic == LABEL_MAGIC
                    and f.name.startswith("train" if train else "t10k"))
        raise DataError(
            f"{raw_dir(root) / spec.name}: label {int(targets[first])} at item {first} "
            f"({len(bad)} out of range in all); expected class indices 0..{NUM_CLASSES - 1}. "
            f"Fix: delete it and rerun: it is re-created from the .gz archives")


def load_tensors(root: Path, device: torch.device) -> FashionTensors:
    """Read through torchvision's dataset class, then move once: 55 MB of uint8 fits anywhere."""
    import torchvision

    parts = []
    for train in (True, False):
        ds = torchvision.datasets.FashionMNIST(str(root), train=train, download=False)
        check_labels(ds.targets, root, train)
        parts.append(ds.data.reshape(len(ds.data), NUM_INPUTS).to(device))
        parts.append(ds.targets.to(device=device, dtype=torch.int64))
    return FashionTensors(*parts)


class TensorLoader:
    """Batches by index from device-resident uint8 tensors: no per-sample Python, no workers.

    Yields float32 images in [0, 1] of shape (B, 784) and int64 labels, both on the device the
    tensors live on. Shuffling draws its permutation from ``generator`` on that same device.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool, generator: torch.Generator | None = None) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, device=self.labels.device, generator=self.generator)
        for start in range(0, n, self.batch_size):
            if self.shuffle:
                idx = order[start:start + self.batch_size]
                X, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            else:  # in order: views, no gather
                X = self.images[start:start + self.batch_size]
                y = self.labels[start:start + self.batch_size]
            yield X.to(torch.float32).mul_(1 / 255), y  # ToTensor's scaling


def quiet_worker(worker_id: int) -> None:
    """``worker_init_fn`` for every DataLoader here: Ctrl-C is the main process's to handle.

    The main process catches it, checkpoints and shuts its workers down; a worker that took
    the SIGINT too died mid-handover, and its fd-sharing server (multiprocessing's
    resource_sharer, which reports through ``sys.excepthook`` itself) printed a
    ``BrokenPipeError``/``ConnectionResetError`` traceback under "interrupted; --resume
    continues". Only those, from that server, are muted; every other error still prints."""
    import threading
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def from_sharer(exc_type: type[BaseException], tb: object) -> bool:
        if not issubclass(exc_type, ConnectionError | EOFError):
            return False
        frames = traceback.extract_tb(tb) if tb is not None else []  # type: ignore[arg-type]
        return any(f.filename.endswith("resource_sharer.py") for f in frames)

    previous_sys = sys.excepthook

    def sys_hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        if not from_sharer(exc_type, tb):
            previous_sys(exc_type, exc, tb)

    sys.excepthook = sys_hook
    previous = threading.excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if not from_sharer(args.exc_type, args.exc_traceback):
            previous(args)

    threading.excepthook = thread_hook


def book_dataloaders(root: Path, batch_size: int, workers: int | None = None,
                     generator: torch.Generator | None = None, *,
                     persistent: bool | None = None,
                     ) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """The book's pipeline: torchvision + ToTensor + DataLoader; batches arrive on the CPU.

    ``workers=None``: :func:`default_workers` (the book's 4, capped by the usable CPUs)."""
    import torchvision
    from torch.utils import data
    from torchvision import transforms

    trans = transforms.ToTensor()
    train = torchvision.datasets.FashionMNIST(str(root), train=True, transform=trans)
    test = torchvision.datasets.FashionMNIST(str(root), train=False, transform=trans)
    check_labels(train.targets, root, True)
    check_labels(test.targets, root, False)
    workers = default_workers() if workers is None else workers
    # persistent=False (the trainer's choice): workers start each epoch with seeds drawn
    # from ``generator``, so saving its state is enough to repeat an epoch exactly
    persistent = workers > 0 if persistent is None else persistent and workers > 0
    return (data.DataLoader(train, batch_size, shuffle=True, generator=generator,
                            num_workers=workers, persistent_workers=persistent,
                            worker_init_fn=quiet_worker),
            data.DataLoader(test, batch_size, shuffle=False, num_workers=workers,
                            persistent_workers=persistent, worker_init_fn=quiet_worker))
