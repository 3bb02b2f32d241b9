"""Dataset discovery and verification, on small IDX files the tests write themselves."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import pytest
import torch
import torchvision  # noqa: F401 - imported at collection: it sets TORCHINDUCTOR_CACHE_DIR

from softmax import data
from softmax.data import (
    DEBIAN_MIRROR,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    DataError,
    IdxSpec,
    TensorLoader,
    book_dataloaders,
    check_idx_file,
    load_tensors,
    locate,
    raw_dir,
    verify_archive,
)

COUNTS = {"train": 12, "t10k": 5}


def idx_bytes(magic: int, count: int, seed: int) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    if magic == IMAGE_MAGIC:
        body = torch.randint(0, 256, (count * 784,), dtype=torch.uint8, generator=gen)
        return struct.pack(">IIII", magic, count, 28, 28) + bytes(body.tolist())
    body = torch.randint(0, 10, (count,), dtype=torch.uint8, generator=gen)
    return struct.pack(">II", magic, count) + bytes(body.tolist())


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, bytes]:
    """Swap the four real file specs for small ones; return each file's content. The
    archives' published md5 is that of gzip with mtime 0 (what `archives()` writes)."""
    contents, specs = {}, []
    for i, spec in enumerate(data.FILES):
        count = COUNTS[spec.name.split("-")[0]]
        content = idx_bytes(spec.magic, count, i)
        contents[spec.name] = content
        specs.append(IdxSpec(spec.name, md5(gzip.compress(content, mtime=0)), md5(content),
                             spec.magic, count))
    monkeypatch.setattr(data, "FILES", tuple(specs))
    empty = tmp_path / "no-mirror"
    empty.mkdir()
    monkeypatch.setenv("SOFTMAX_MIRROR", str(empty))
    monkeypatch.setenv("SOFTMAX_OFFLINE", "1")
    return contents


def archives(directory: Path, contents: dict[str, bytes], mtime: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        (directory / f"{name}.gz").write_bytes(gzip.compress(content, mtime=mtime))


def test_unpacked_layout_is_used_first(small: dict[str, bytes], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    raw_dir(root).mkdir(parents=True)
    for name, content in small.items():
        (raw_dir(root) / name).write_bytes(content)
    bad_mirror = tmp_path / "bad-mirror"
    bad_mirror.mkdir()
    for name in small:
        (bad_mirror / f"{name}.gz").write_bytes(b"garbage")  # would fail if it were read
    monkeypatch.setenv("SOFTMAX_MIRROR", str(bad_mirror))
    assert locate(root) == root
    tensors = load_tensors(root, torch.device("cpu"))  # through torchvision's dataset class
    assert tensors.train_images.shape == (12, 784) and tensors.test_labels.shape == (5,)
    assert tensors.train_images.dtype == torch.uint8 and tensors.train_labels.dtype == torch.int64


def test_mirror_is_verified_and_unpacked(small: dict[str, bytes], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    archives(mirror, small)
    monkeypatch.setenv("SOFTMAX_MIRROR", str(mirror))
    root = tmp_path / "root"
    assert locate(root) == root
    for name, content in small.items():
        assert (raw_dir(root) / name).read_bytes() == content
    assert not list(raw_dir(root).glob(".*tmp"))


def test_archives_in_root_are_used(small: dict[str, bytes], tmp_path: Path) -> None:
    root = tmp_path / "root"
    archives(raw_dir(root), small)
    assert locate(root) == root
    assert (raw_dir(root) / "t10k-labels-idx1-ubyte").is_file()


def test_repacked_archive_accepted_by_content_md5(small: dict[str, bytes], tmp_path: Path) -> None:
    """Debian re-packs the archives (no file name in the gzip header): other archive md5, same
    content. Verified by the published md5 of the content instead."""
    archives(tmp_path, small, mtime=12345)
    name = "train-labels-idx1-ubyte"
    spec = next(s for s in data.FILES if s.name == name)
    assert md5((tmp_path / f"{name}.gz").read_bytes()) != spec.archive_md5
    assert verify_archive(tmp_path / f"{name}.gz", spec) == small[name]


def test_corrupt_archive_names_file_and_md5(small: dict[str, bytes], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    archives(mirror, small)
    victim = mirror / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-40])  # truncated download
    monkeypatch.setenv("SOFTMAX_MIRROR", str(mirror))
    spec = next(s for s in data.FILES if s.name == "train-images-idx3-ubyte")
    with pytest.raises(DataError) as err:
        locate(tmp_path / "root")
    msg = str(err.value)
    assert str(victim) in msg and spec.archive_md5 in msg and "truncated" in msg


def test_wrong_content_names_both_md5s(small: dict[str, bytes], tmp_path: Path) -> None:
    spec = next(s for s in data.FILES if s.name == "t10k-labels-idx1-ubyte")
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x01" * 20))
    with pytest.raises(DataError) as err:
        verify_archive(path, spec)
    assert str(path) in str(err.value) and spec.archive_md5 in str(err.value)
    assert spec.content_md5 in str(err.value)


@pytest.mark.parametrize("damage,expect", [
    (lambda b: b[:-100], "truncated"),
    (lambda b: b + b"\x00", "too long"),
    (lambda b: struct.pack(">I", 0x00000802) + b[4:], "found magic 0x00000802"),
    (lambda b: b[:6], "found only 6 bytes"),
])
def test_damaged_unpacked_file_names_header_and_size(small: dict[str, bytes], tmp_path: Path,
                                                    damage, expect: str) -> None:
    root = tmp_path / "root"
    raw_dir(root).mkdir(parents=True)
    for name, content in small.items():
        (raw_dir(root) / name).write_bytes(content)
    victim = raw_dir(root) / "train-images-idx3-ubyte"
    victim.write_bytes(damage(small["train-images-idx3-ubyte"]))
    with pytest.raises(DataError) as err:
        locate(root)
    msg = str(err.value)
    assert msg.startswith(str(victim)) and expect in msg
    assert "magic 0x00000803" in msg and "delete it and rerun" in msg


def test_nothing_found_lists_every_way(small: dict[str, bytes], tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        locate(tmp_path / "empty")
    msg = str(err.value)
    for part in ("--data-root", "$SOFTMAX_DATA_ROOT", "train-images-idx3-ubyte.gz",
                 "$SOFTMAX_MIRROR", "dataset-fashion-mnist", "download: skipped"):
        assert part in msg


@pytest.mark.parametrize("mirror", [True, False])
@pytest.mark.parametrize("where,what", [
    ("FashionMNIST/raw", "a folder holding the four IDX files or their .gz archives"),
    ("FashionMNIST", "a folder holding raw/"),
])
def test_a_file_where_a_folder_belongs_is_named_first(
        small: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        mirror: bool, where: str, what: str) -> None:
    """A file named `raw` (a download saved under the folder's name) was "File exists"
    blaming --checkpoint-dir and --plot when a mirror was there to unpack, and "not found"
    when not; the one fix is to move it away."""
    if mirror:
        archives(tmp_path / "mirror", small)
        monkeypatch.setenv("SOFTMAX_MIRROR", str(tmp_path / "mirror"))
    root = tmp_path / "root"
    victim = root / where
    victim.parent.mkdir(parents=True)
    victim.write_text("not a folder\n")
    with pytest.raises(DataError) as err:
        locate(root)
    assert str(err.value) == (
        f"{victim} is a file, not a folder; expected {what}. Fix: move it away (mv {victim} "
        f"{victim}.bak) and rerun, or pass another --data-root")
    assert victim.read_text() == "not a folder\n" and sorted(root.rglob("*")) == sorted(
        [victim, *victim.parents[:len(Path(where).parts) - 1]])  # nothing written


def test_a_link_to_nothing_as_the_root_is_named(small: dict[str, bytes],
                                                tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.symlink_to(tmp_path / "gone")
    with pytest.raises(DataError, match=f"^{root} is a link to nothing, not a folder; "
                                        f"expected the dataset root folder"):
        locate(root)


def test_real_spec_sizes() -> None:
    sizes = {s.name: s.size_bytes for s in data.FILES}
    assert sizes["train-images-idx3-ubyte"] == 47040016
    assert sizes["t10k-labels-idx1-ubyte"] == 10008


@pytest.mark.skipif(not (DEBIAN_MIRROR / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Requires: Debian's dataset-fashion-mnist package")
def test_debian_mirror_passes_published_md5s(tmp_path: Path) -> None:
    spec = next(s for s in data.FILES if s.name == "t10k-labels-idx1-ubyte")
    content = verify_archive(DEBIAN_MIRROR / "t10k-labels-idx1-ubyte.gz", spec)
    path = tmp_path / spec.name
    path.write_bytes(content)
    check_idx_file(path, spec)


def test_tensor_loader_batches_cover_the_data_once() -> None:
    images = torch.arange(10 * 784, dtype=torch.int64).remainder(256).to(torch.uint8)
    images = images.reshape(10, 784)
    labels = torch.arange(10)
    loader = TensorLoader(images, labels, 4, shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(10))
    X, y = batches[0]
    assert X.dtype == torch.float32 and 0 <= float(X.min()) and float(X.max()) <= 1
    torch.testing.assert_close(X, images[y].float() / 255)


def test_label_magic_constant() -> None:
    assert LABEL_MAGIC == 2049 and IMAGE_MAGIC == 2051


@pytest.mark.parametrize("train", [True, False])
def test_damaged_label_byte_is_named_at_load(small: dict[str, bytes], tmp_path: Path,
                                             train: bool) -> None:
    """Header and size are intact, so locate() accepts the file; the loader must still name
    it instead of letting the loss fail with 'index 200 is out of bounds'."""
    root = tmp_path / "root"
    raw_dir(root).mkdir(parents=True)
    name = "train-labels-idx1-ubyte" if train else "t10k-labels-idx1-ubyte"
    for fname, content in small.items():
        if fname == name:
            content = content[:8 + 3] + bytes([200]) + content[8 + 4:]
        (raw_dir(root) / fname).write_bytes(content)
    assert locate(root) == root
    expected = (f"{raw_dir(root) / name}: label 200 at item 3 (1 out of range in all); "
                f"expected class indices 0..9. Fix: delete it")
    with pytest.raises(DataError) as err:
        load_tensors(root, torch.device("cpu"))
    assert str(err.value).startswith(expected)
    with pytest.raises(DataError) as err:
        book_dataloaders(root, 4, 0)
    assert str(err.value).startswith(expected)


def test_quiet_worker_leaves_ctrl_c_to_the_main_process() -> None:
    """A worker that took the terminal's SIGINT died mid-handover, and its fd-sharing
    thread printed a ConnectionResetError traceback after "interrupted; --resume ..."."""
    import subprocess
    import sys

    # multiprocessing's resource_sharer reports through sys.excepthook from its own thread:
    # run its real _serve against a listener whose accept() fails as in the audit
    code = ("import os, signal, sys, threading\n"
            "from multiprocessing import resource_sharer\n"
            "from softmax.data import quiet_worker\n"
            "quiet_worker(0)\n"
            "assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN\n"
            "class Stop:\n"
            "    def __enter__(self):\n        return self\n"
            "    def __exit__(self, *a):\n        return False\n"
            "    def recv(self):\n        return None\n"
            "class Broken:\n"
            "    calls = 0\n"
            "    def accept(self):\n"
            "        Broken.calls += 1\n"
            "        if Broken.calls == 1:\n"
            "            raise BrokenPipeError(32, 'Broken pipe')\n"
            "        return Stop()\n"
            "srv = resource_sharer._ResourceSharer()\n"
            "srv._listener = Broken()\n"
            "t = threading.Thread(target=srv._serve); t.start(); t.join()\n"
            "def other():\n    raise ValueError('a real bug')\n"
            "t = threading.Thread(target=other); t.start(); t.join()\n"
            "os.kill(os.getpid(), signal.SIGINT)\nprint('survived', flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "survived\n"
    assert "BrokenPipeError" not in proc.stderr and "resource_sharer" not in proc.stderr
    assert "ValueError: a real bug" in proc.stderr  # other threads' errors still show
