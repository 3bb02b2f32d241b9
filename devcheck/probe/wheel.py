"""The installed torch wheel's build, read from its files without importing torch.

Importing torch costs seconds; ``devcheck gpus`` must answer in a fraction of one and still
say "this wheel is CPU-only" or "this wheel needs CUDA 13.0". The build facts live in
``torch/version.py`` (generated at build time), which is plain assignments, so it is parsed
with :mod:`ast` instead of executed.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from devcheck.facts import WheelFacts


def _find_torch_dir() -> Path | None:
    """Where ``import torch`` would load from; ``find_spec`` on a top-level name imports nothing."""
    spec = importlib.util.find_spec("torch")
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    return Path(spec.origin).parent if spec.origin else None


def parse_version_file(text: str) -> dict[str, str | None]:
    """The literal assignments of a ``torch/version.py`` (``__version__``, ``cuda``, ``hip``...)."""
    values: dict[str, str | None] = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        try:
            literal = ast.literal_eval(value)
        except ValueError:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and (literal is None or isinstance(literal, str)):
                values[target.id] = literal
    return values


def wheel_from_version_file(text: str, *, location: str | None = None,
                            dist_version: str | None = None) -> WheelFacts:
    """Build facts from a version.py's text (the pure part, used by tests with fake files)."""
    values = parse_version_file(text)
    version = (values.get("__version__") or dist_version
               or _dist_version(Path(location) if location else None))
    cuda = values.get("cuda")
    hip = values.get("hip") or values.get("rocm")
    xpu = values.get("xpu")
    cpu_only: bool | None = cuda is None and hip is None and xpu is None
    error = None
    if cpu_only and "cuda" not in values:  # no `cuda = ...` at all: unknown, not CPU-only
        cpu_only = None
        where = f"{location}/version.py" if location else "torch/version.py"
        error = f"{where} has no `cuda = ...` line: which CUDA torch was built for is unknown"
    return WheelFacts(installed=True, version=version, cuda_version=cuda, hip_version=hip,
                      cpu_only=cpu_only, location=location, error=error)


def _dist_version(torch_dir: Path | None = None) -> str | None:
    """The torch distribution's version (no local "+cu130" tag), when its files are the ones
    at ``torch_dir``: another torch's metadata further down sys.path would misname this one.
    importlib.metadata is slow to import, so only when version.py does not say."""
    try:
        import importlib.metadata

        dist = importlib.metadata.distribution("torch")
        if torch_dir is not None and (
                Path(str(dist.locate_file("torch"))).resolve() != torch_dir.resolve()):
            return None
        return dist.version
    except Exception:
        return None


def probe_wheel() -> WheelFacts:
    """Describe the installed torch build; never raises and never imports torch."""
    try:
        torch_dir = _find_torch_dir()
    except Exception as exc:
        return WheelFacts(installed=False, error=f"could not locate torch: {exc}")
    if torch_dir is None:
        return WheelFacts(installed=False, error="torch is not installed in this environment "
                                                  "(no importable 'torch' package)")
    version_file = torch_dir / "version.py"
    try:
        data = version_file.read_bytes()
    except OSError as exc:
        return WheelFacts(installed=True, version=_dist_version(torch_dir),
                          location=str(torch_dir),
                          error=f"could not read {version_file}: {exc.strerror or exc}")
    # Bytes that are not UTF-8 (a corrupted or hand-edited file) cost those bytes, not the
    # fact that torch is installed.
    text = data.decode("utf-8", "replace")
    try:
        return wheel_from_version_file(text, location=str(torch_dir))
    except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes in the source
        return WheelFacts(installed=True, version=_dist_version(torch_dir),
                          location=str(torch_dir), error=f"could not parse {version_file}: {exc}")


# --- compatibility knowledge (pure functions; the rules in diagnose.py use them) ---------

# Oldest Linux driver per CUDA major that runs any toolkit of that major through
# minor-version compatibility (NVIDIA, "CUDA Compatibility": 13.x >= 580, 12.x >= 525.60.13,
# 11.x >= 450.80.02). Such a driver runs the wheel's runtime, but without PTX JIT.
MIN_LINUX_DRIVER = {13: "580", 12: "525.60.13", 11: "450.80.02"}
# The Linux driver that fully supports each toolkit (CUDA release notes, "CUDA Toolkit and
# Corresponding Driver Versions", GA releases): what `nvidia-smi` then reports as its CUDA.
TOOLKIT_LINUX_DRIVER = {
    (13, 0): "580.65.06", (12, 9): "575.51.03", (12, 8): "570.26", (12, 6): "560.28.03",
    (12, 5): "555.42.02", (12, 4): "550.54.14", (12, 2): "535.54.03", (12, 1): "530.30.02",
    (12, 0): "525.60.13", (11, 8): "520.61.05",
}
# CUDA versions PyTorch has published wheel indexes for (https://download.pytorch.org/whl/cuXYZ).
CUDA_INDEXES = ("13.0", "12.9", "12.8", "12.6", "12.4", "12.1", "11.8")
INDEX_URL = "https://download.pytorch.org/whl/"


def parse_version(text: str | None) -> tuple[int, int] | None:
    """"12.8" / "12.8.1" / "13" -> (12, 8); anything else -> None."""
    if not text:
        return None
    parts = str(text).strip().split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1] else 0
    except ValueError:
        return None


def cuda_index_for(driver_cuda: str | None) -> str | None:
    """The newest PyTorch wheel index whose CUDA the driver supports: "12.4" -> "cu124"."""
    have = parse_version(driver_cuda)
    if have is None:
        return None
    versions = [v for v in map(parse_version, CUDA_INDEXES) if v is not None]
    # Newest index the driver fully supports; else the oldest of its major, which runs
    # through minor-version compatibility (a CUDA 11.4 driver runs cu118 wheels).
    fits = [v for v in versions if v <= have] or sorted(v for v in versions if v[0] == have[0])
    return f"cu{fits[0][0]}{fits[0][1]}" if fits else None


def install_command(index: str) -> str:
    return f"pip install --force-reinstall torch --index-url {INDEX_URL}{index}"


def min_driver_text(cuda: str | None) -> str | None:
    """"13.0" -> "a driver supporting CUDA 13.0 (on Linux: driver >= 580.65.06)".

    Names the driver that supports the toolkit, and the minor-version-compatibility floor
    when that is an older branch, so "update to ..." never names a driver already installed.
    """
    version = parse_version(cuda)
    if version is None:
        return None
    text = f"a driver supporting CUDA {version[0]}.{version[1]}"
    full, floor = TOOLKIT_LINUX_DRIVER.get(version), MIN_LINUX_DRIVER.get(version[0])
    if full is None:
        return f"{text} (on Linux: driver >= {floor})" if floor else text
    if floor is None or full.split(".")[0] == floor.split(".")[0]:
        return f"{text} (on Linux: driver >= {full})"
    return (f"{text} (on Linux: driver >= {full}; any driver >= {floor} runs it through "
            "minor-version compatibility)")


def _arch_cc(arch: str) -> tuple[tuple[int, int], str, str] | None:
    """"sm_90a" -> ((9, 0), "sm", "a"); None for anything unparseable."""
    kind, _, digits = arch.partition("_")
    suffix = digits[-1] if digits and digits[-1].isalpha() else ""
    digits = digits.rstrip("abcdefghijklmnopqrstuvwxyz")
    if not digits.isdigit() or len(digits) < 2:
        return None
    return (int(digits[:-1]), int(digits[-1])), kind, suffix


def lowest_arch(arch_list: tuple[str, ...]) -> tuple[int, int] | None:
    parsed = [p[0] for p in map(_arch_cc, arch_list) if p is not None]
    return min(parsed) if parsed else None


def arch_supported(capability: str | None, arch_list: tuple[str, ...]) -> bool | None:
    """Can a wheel built for ``arch_list`` run on a GPU of ``capability``? None: unknown.

    ``sm_XY`` is machine code (SASS): it runs on GPUs of the same major with minor >= Y
    (sm_86 code runs on CC 8.9). ``compute_XY`` is PTX, JIT-compiled by the driver for any
    GPU with CC >= X.Y. Arch-specific targets (``sm_90a``) run only on that CC; family
    targets (``sm_100f``) on that CC and the later ones of its major (CC 10.3).
    """
    cc = parse_version(capability)
    if cc is None or not arch_list:
        return None
    for arch in arch_list:
        parsed = _arch_cc(arch)
        if parsed is None:
            continue
        built, kind, suffix = parsed
        exact = suffix == "a"
        if kind == "sm" and (built == cc if exact else built[0] == cc[0] and built[1] <= cc[1]):
            return True
        if kind == "compute" and not suffix and built <= cc:
            return True
    return False
