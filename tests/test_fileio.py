"""devcheck.fileio: atomic writes keep the real suffix, leave no temporary, name the file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from devcheck.fileio import (
    OutputError,
    atomic_path,
    atomic_write_text,
    check_writable,
    temp_name,
)


def test_temp_name_keeps_the_real_suffix_last(tmp_path: Path) -> None:
    tmp = temp_name(tmp_path / "curves.png")
    assert tmp.suffix == ".png" and tmp.name.startswith(".curves.") and tmp.parent == tmp_path


def test_atomic_write_replaces_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_failing_writer_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    target.write_text("good checkpoint")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError("writer bug")
    assert target.read_text() == "good checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_an_os_error_names_the_target_not_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    with pytest.raises(OutputError) as info, atomic_path(target, "plot") as tmp:
        tmp.write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device")
    message = str(info.value)
    assert str(target) in message and "plot" in message and "disk is full" in message
    assert ".tmp" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_dev_full_is_one_error_naming_it() -> None:
    with pytest.raises(OutputError) as info:
        atomic_write_text("/dev/full", "x" * 100_000, "predictions")
    assert "/dev/full" in str(info.value) and "predictions" in str(info.value)


def test_check_writable_refuses_a_directory_and_a_missing_parent(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(tmp_path, "metrics")
    missing = tmp_path / "nope" / "x.json"
    with pytest.raises(OutputError, match="does not exist"):
        check_writable(missing, "metrics")
    assert not missing.parent.exists()  # a typo never creates folders
    assert check_writable(tmp_path / "ok.json") == tmp_path / "ok.json"


def test_a_symlinked_target_is_written_through_the_link(tmp_path: Path) -> None:
    """A rename onto a symlink replaces the link: the user's link (to shared storage, say)
    must stay a link and the file it points to must get the new content."""
    real = tmp_path / "store" / "m.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "m.json"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert [p.name for p in real.parent.iterdir()] == ["m.json"]
    dangling = tmp_path / "d.json"
    dangling.symlink_to(tmp_path / "store" / "new.json")
    atomic_write_text(dangling, "created")
    assert dangling.is_symlink() and (real.parent / "new.json").read_text() == "created"


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, "free space"), (errno.EFBIG, "raise the limit"),
    (errno.EACCES, "check the permissions"), (errno.EROFS, "check the permissions"),
    (errno.EIO, "choose another path"),
])
def test_the_advice_fits_the_cause(code: int, words: str) -> None:
    from devcheck.fileio import advice

    text = advice(OSError(code, os.strerror(code)), "checkpoint")
    assert words in text and text.endswith("for the checkpoint")
    if code in (errno.EACCES, errno.EROFS):
        assert "free space" not in text


def test_a_read_only_filesystem_is_named_as_such(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """os.access only says "no": a read-only mount is not a permission problem to chmod."""
    from devcheck import fileio

    monkeypatch.setattr(fileio.os, "access", lambda *a, **k: False)
    monkeypatch.setattr(fileio, "read_only_fs", lambda p: True)
    with pytest.raises(OutputError, match="is on a read-only filesystem"):
        check_writable(tmp_path / "m.json", "--metrics-json")
    monkeypatch.setattr(fileio, "read_only_fs", lambda p: False)
    with pytest.raises(OutputError, match=r"is not writable \(permission denied\)"):
        check_writable(tmp_path / "m.json", "--metrics-json")
