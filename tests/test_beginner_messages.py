"""Issue 15 item 3: messages a beginner can act on, each checked here.

Where the data came from (said once), DataLoader workers that fit the CPUs, integer epoch
ticks, "1 epoch" in the singular, guard hints that fit the dtype seen, and a one-line
confirmation from ``%load_ext devcheck``.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest
import torch

from softmax import data as sdata


# -- where the data came from, said once ---------------------------------------------------
@pytest.fixture(scope="module")
def archives(fashion_root: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private mirror: the four .gz archives, re-packed (fast level) from the real files."""
    mirror = tmp_path_factory.mktemp("mirror")
    for spec in sdata.FILES:
        raw = sdata.raw_dir(Path(fashion_root)) / spec.name
        (mirror / f"{spec.name}.gz").write_bytes(
            gzip.compress(raw.read_bytes(), compresslevel=1, mtime=0))
    return mirror


def test_locate_says_where_the_data_came_from_once(archives: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTMAX_MIRROR", str(archives))
    monkeypatch.setenv("SOFTMAX_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    assert sdata.locate("data", log=lines.append) == Path("data")
    assert lines == [f"using Fashion-MNIST from {archives} (a mirror listed in "
                     f"$SOFTMAX_MIRROR), unpacked to {os.path.join('.', 'data')}"]
    lines.clear()
    sdata.locate("data", log=lines.append)  # the next run: already unpacked
    assert lines == [f"using Fashion-MNIST from {os.path.join('.', 'data', 'FashionMNIST', 'raw')}"]


def test_locate_names_debians_package_for_the_debian_mirror(
        archives: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOFTMAX_MIRROR", raising=False)
    monkeypatch.setattr(sdata, "DEBIAN_MIRROR", archives)
    lines: list[str] = []
    sdata.locate(tmp_path / "root", log=lines.append)
    assert lines == [f"using Fashion-MNIST from {archives} (Debian's dataset-fashion-mnist), "
                     f"unpacked to {tmp_path / 'root'}"]


def test_locate_is_silent_without_a_log(fashion_root: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    sdata.locate(fashion_root)  # library code prints nothing of its own
    assert capsys.readouterr() == ("", "")


def test_archives_in_the_root_are_named(archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(archives, root)
    lines: list[str] = []
    sdata.locate(root, log=lines.append)
    assert lines == [f"using the Fashion-MNIST archives in {root}, unpacked to "
                     f"{sdata.raw_dir(root)}"]


# -- DataLoader workers --------------------------------------------------------------------
@pytest.mark.parametrize("cpus,expected", [(1, 1), (2, 2), (3, 3), (64, 4)])
def test_default_workers_follow_the_usable_cpus(cpus: int, expected: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert sdata.default_workers() == expected


def test_default_workers_without_an_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS and Windows have no sched_getaffinity: the CPU count decides."""
    monkeypatch.delattr("os.sched_getaffinity", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert sdata.default_workers() == 2
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert sdata.default_workers() == 1


# -- plots: integer epoch ticks --------------------------------------------------------------
@pytest.mark.parametrize("epochs", [2, 3, 7])
def test_epoch_ticks_are_integers(epochs: int) -> None:
    from softmax.plot import LivePlot

    live = LivePlot(None, epochs=epochs, notebook=False)
    for e in range(1, epochs + 1):
        live.add(e, (0.5, 0.7, 0.7))
    fig = live.draw()
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


# -- guard hints that fit the value seen -----------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_guard_never_suggests_255_for_float_images(dtype: torch.dtype) -> None:
    from devcheck.guard import PlacementError, StepGuard

    X = torch.rand(4, 784).to(dtype)  # already in [0, 1]
    with pytest.raises(PlacementError) as info:
        StepGuard("cpu").check_inputs(X, torch.zeros(4, dtype=torch.int64))
    message = str(info.value)
    assert "255" not in message.replace("do not divide it by 255", "")
    assert "X = X.to('cpu', torch.float32)" in message


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16])
def test_guard_suggests_255_for_integer_pixels(dtype: torch.dtype) -> None:
    from devcheck.guard import PlacementError, StepGuard

    X = torch.randint(0, 256, (4, 784), dtype=dtype)
    with pytest.raises(PlacementError, match=r"torch.float32\) / 255 \(integer pixels"):
        StepGuard("cpu").check_inputs(X, torch.zeros(4, dtype=torch.int64))


# -- %load_ext devcheck says it is on --------------------------------------------------------
class FakeShell:
    def __init__(self) -> None:
        self.custom_exceptions: tuple[type, ...] = ()

    def set_custom_exc(self, exc_tuple: tuple[type, ...], handler: object) -> None:
        self.custom_exceptions, self.CustomTB = exc_tuple, handler


def test_load_ext_confirms_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from devcheck.integrations import ipython as hook

    shell = FakeShell()
    hook.load_ipython_extension(shell)
    first = capsys.readouterr().out.splitlines()
    assert len(first) == 1 and first[0].startswith("[devcheck] active:")
    assert "%unload_ext devcheck" in first[0] and "left alone" in first[0]
    hook.load_ipython_extension(shell)
    assert capsys.readouterr().out.splitlines() == [
        "[devcheck] already active (%unload_ext devcheck turns it off)"]
    hook.unload_ipython_extension(shell)
