"""The wheel probe (torch's files, no import) and the CUDA/arch compatibility knowledge."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from devcheck.probe import wheel

CU130 = """from typing import Optional

__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip', 'rocm', 'xpu']
__version__ = '2.14.1+cu130'
debug = False
cuda: Optional[str] = '13.0'
git_version = '5c4886908584029761b579af026dcfb627c84070'
hip: Optional[str] = None
rocm: Optional[str] = None
xpu: Optional[str] = None
"""
CPU = "__version__ = '2.5.0+cpu'\ndebug = False\ncuda = None\nhip = None\n"
ROCM = "__version__ = '2.5.0+rocm6.2'\ncuda = None\nhip = '6.2.41133'\n"


@pytest.mark.parametrize("text, version, cuda, hip, cpu_only", [
    (CU130, "2.14.1+cu130", "13.0", None, False),
    (CPU, "2.5.0+cpu", None, None, True),
    (ROCM, "2.5.0+rocm6.2", None, "6.2.41133", False),
])
def test_version_file_variants(text: str, version: str, cuda: str | None, hip: str | None,
                               cpu_only: bool) -> None:
    facts = wheel.wheel_from_version_file(text)
    assert (facts.version, facts.cuda_version, facts.hip_version, facts.cpu_only) == (
        version, cuda, hip, cpu_only)


def test_real_wheel_matches_imported_torch_without_importing_it() -> None:
    code = ("import sys; from devcheck.probe.wheel import probe_wheel; w = probe_wheel(); "
            "print(w.version, w.cuda_version, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    import torch

    assert out == [torch.__version__, str(torch.version.cuda), "False"]


def test_torch_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    facts = wheel.probe_wheel()
    assert not facts.installed and "not installed" in facts.error


def test_unreadable_and_broken_version_file(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setattr(wheel, "_find_torch_dir", lambda: tmp_path)
    facts = wheel.probe_wheel()
    assert facts.installed and "could not read" in facts.error
    (tmp_path / "version.py").write_text("__version__ = (\n")
    assert "could not parse" in wheel.probe_wheel().error
    (tmp_path / "version.py").write_text(CPU)
    assert wheel.probe_wheel().cpu_only is True


@pytest.mark.parametrize("cc, expected", [
    ("7.5", True), ("8.0", True), ("8.6", True), ("8.9", True),  # sm_86 SASS runs on 8.9
    ("9.0", True), ("10.0", True), ("10.3", True), ("12.0", True), ("12.1", True),
    ("6.1", False), ("7.0", False), ("11.0", False), (None, None), ("x", None),
])
def test_arch_supported_cu130(cc: str | None, expected: bool | None) -> None:
    arch = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")
    assert wheel.arch_supported(cc, arch) is expected


def test_arch_ptx_and_arch_specific() -> None:
    assert wheel.arch_supported("11.0", ("sm_90", "compute_90")) is True  # PTX JIT forward
    assert wheel.arch_supported("8.6", ("compute_90",)) is False  # PTX never runs backwards
    assert wheel.arch_supported("9.0", ("sm_90a",)) is True
    assert wheel.arch_supported("10.0", ("sm_90a",)) is False  # 'a' targets are exact
    assert wheel.arch_supported("10.3", ("sm_100a",)) is False
    # 'f' (family) targets run on the later GPUs of the same major: sm_100f on CC 10.3
    assert wheel.arch_supported("10.3", ("sm_100f",)) is True
    assert wheel.arch_supported("10.0", ("sm_103f",)) is False
    assert wheel.arch_supported("12.0", ("sm_100f",)) is False
    assert wheel.arch_supported("9.0", ()) is None
    assert wheel.lowest_arch(("sm_75", "sm_120", "compute_90")) == (7, 5)


@pytest.mark.parametrize("driver_cuda, index", [
    ("13.1", "cu130"), ("13.0", "cu130"), ("12.9", "cu129"), ("12.8", "cu128"),
    ("12.7", "cu126"), ("12.4", "cu124"), ("12.2", "cu121"), ("11.8", "cu118"),
    # no index at or below 11.4: cu118 still runs there through minor-version compatibility
    ("11.4", "cu118"), ("10.2", None), (None, None),
])
def test_cuda_index_for_driver(driver_cuda: str | None, index: str | None) -> None:
    assert wheel.cuda_index_for(driver_cuda) == index


def test_min_driver_text_and_install_command() -> None:
    assert wheel.min_driver_text("13.0") == (
        "a driver supporting CUDA 13.0 (on Linux: driver >= 580.65.06)")
    # The driver that *supports* 12.8 is 570+; 525+ only runs it through minor-version
    # compatibility, and saying ">= 525" to the owner of a 535 driver contradicts itself.
    assert wheel.min_driver_text("12.8") == (
        "a driver supporting CUDA 12.8 (on Linux: driver >= 570.26; any driver >= 525.60.13 "
        "runs it through minor-version compatibility)")
    assert "driver >= 525.60.13" in wheel.min_driver_text("12.3")  # not in the table: the floor
    assert wheel.min_driver_text("14.0") == "a driver supporting CUDA 14.0"
    assert wheel.min_driver_text(None) is None
    assert wheel.install_command("cu128").endswith("--index-url "
                                                   "https://download.pytorch.org/whl/cu128")


@pytest.mark.parametrize("data", [
    b"__version__ = '2.14.1+cu130'\ncuda = '13.0'\n# caf\xe9 \xff\xfe\n",  # latin-1 in a comment
    b"\xff\xfe__version__ = '2.14.1+cu130'\ncuda = '13.0'\n",  # a stray BOM-like prefix
    b"__version__ = '2.14.1+cu130'\x00\ncuda = '13.0'\n",  # a NUL byte
])
def test_a_version_file_that_is_not_utf8_still_means_installed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: bytes) -> None:
    monkeypatch.setattr(wheel, "_find_torch_dir", lambda: tmp_path)
    (tmp_path / "version.py").write_bytes(data)
    facts = wheel.probe_wheel()
    assert facts.installed and facts.location == str(tmp_path)
    if facts.error is None:
        assert facts.cuda_version == "13.0"
    else:
        assert facts.error.startswith(f"could not parse {tmp_path / 'version.py'}")


def test_a_missing_version_file_is_an_unknown_build_with_no_borrowed_version(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A torch at tmp_path without version.py: the build is unknown (not CPU-only), and the
    version is not taken from the metadata of another torch installed elsewhere."""
    monkeypatch.setattr(wheel, "_find_torch_dir", lambda: tmp_path)
    facts = wheel.probe_wheel()
    assert facts.installed and facts.cpu_only is None and facts.cuda_version is None
    assert facts.error == f"could not read {tmp_path / 'version.py'}: No such file or directory"
    assert facts.version is None  # this venv's torch distribution is not the one at tmp_path


def test_a_version_file_without_a_cuda_line_is_an_unknown_build() -> None:
    facts = wheel.wheel_from_version_file("__version__ = '2.5.0'\ncuda = get_cuda()\n",
                                          location="/x/torch")
    assert facts.cpu_only is None and facts.version == "2.5.0"
    assert facts.error == ("/x/torch/version.py has no `cuda = ...` line: which CUDA torch was "
                           "built for is unknown")
    assert wheel.wheel_from_version_file(CPU).cpu_only is True  # `cuda = None`: CPU-only


def test_the_real_torch_dir_still_gets_its_distribution_version() -> None:
    torch_dir = wheel._find_torch_dir()
    assert torch_dir is not None and wheel._dist_version(torch_dir) is not None
