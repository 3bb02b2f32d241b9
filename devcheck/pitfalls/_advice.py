"""Advice that fits the error's machine: pure functions from facts to notes and fixes.

A pitfall's fixes are written for the common case. What the pasted text says (a driver
version, a GPU, ``CUDA_VISIBLE_DEVICES``) and what this machine says (macOS, no NVIDIA GPU,
other processes holding GPU memory) reorder or sharpen them: a driver that supports only
CUDA 9.0 gets no ``cu130`` wheel, a Mac gets no CUDA wheel at all, a GPU-less machine gets
"use the CPU" first. Nothing here reads hardware: the CLI passes :class:`Machine` in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from devcheck.facts import ToDict
from devcheck.pitfalls._base import Fix
from devcheck.pitfalls._textfacts import TextFacts, size_bytes
from devcheck.probe.wheel import cuda_index_for, install_command, min_driver_text


@dataclass(frozen=True)
class Machine(ToDict):
    """Cheap facts about the machine running ``explain`` (no torch import)."""

    platform: str  # sys.platform: "linux", "darwin", "win32"
    nvidia_gpus: int | None = None  # NVIDIA devices on the PCI bus; None: unknown
    driver_cuda: str | None = None  # newest CUDA the installed driver supports, "13.0"
    torch_cuda: str | None = None  # CUDA of the installed torch wheel; None: CPU-only/unknown
    torch_installed: bool = True
    gpu_memory: tuple[str, ...] = ()  # one line per GPU process, from NVML (OOM only)


@dataclass(frozen=True)
class Advice:
    notes: tuple[str, ...]  # what the text and the machine say, in plain words
    fixes: tuple[Fix, ...]  # fixes to put first
    drop: tuple[str, ...] = ()  # the pitfall's own fixes whose code holds one of these go


# GPU names as printed -> architecture, for a text naming the GPU but not its sm_XX.
_NAME_SM = (
    (r"RTX (?:PRO )?50\d0|RTX PRO 6000 Blackwell|\bB200\b|\bGB200\b|\bB100\b", "sm_120"),
    (r"\bGB10\b|DGX Spark", "sm_121"),
    (r"RTX 40\d0|\bL4\b|\bL40S?\b|RTX [2-6]000 Ada", "sm_89"),
    (r"\bH100\b|\bH200\b|\bGH200\b|\bH800\b", "sm_90"),
    (r"RTX 30\d0|\bA10G?\b|\bA40\b|RTX A[2-6]000", "sm_86"),
    (r"\bA100\b|\bA800\b|\bA30\b", "sm_80"),
    (r"RTX 20\d0|GTX 16\d0|\bT4\b|TITAN RTX|Quadro RTX", "sm_75"),
    (r"\bV100\b|TITAN V\b", "sm_70"),
    (r"GTX 10\d0|TITAN Xp|\bP40\b|\bP4\b|GT 1030", "sm_61"),
    (r"\bP100\b", "sm_60"),
    (r"GTX 9\d0|TITAN X\b|\bM40\b|\bM60\b", "sm_52"),
    (r"\bK80\b", "sm_37"),
    (r"Jetson AGX Orin|Orin Nano|Orin NX", "sm_87"),
)


def sm_for_name(name: str) -> str | None:
    for pattern, sm in _NAME_SM:
        if re.search(pattern, name, re.I):
            return sm
    return None


def wheel_for_sm(sm: str) -> tuple[str, str]:
    """(what to install, why) for a GPU architecture, from PyTorch's published wheels."""
    cc = int(sm.split("_")[1])
    if cc < 50:
        return ("pip install torch==2.0.1 --index-url https://download.pytorch.org/whl/cu118",
                f"{sm} (Kepler): torch 2.0.x cu118 wheels were the last built for it; current "
                "wheels need sm_75 or newer")
    if cc < 75:
        return (install_command("cu126"),
                f"{sm} (Maxwell/Pascal/Volta): the cu126 wheels still include it; cu128 "
                "and cu130 wheels start at sm_75")
    if cc == 87:
        return ("see NVIDIA's PyTorch for Jetson (JetPack) wheels",
                "sm_87 is a Jetson Orin: PyPI and download.pytorch.org wheels are not built "
                "for it")
    if cc >= 100:
        return (install_command("cu128"),
                f"{sm} (Blackwell) needs torch >= 2.7 built with CUDA 12.8 or newer (cu128, "
                "cu129, cu130)")
    return (install_command("cu128"),
            f"{sm} is in every current wheel (cu126, cu128, cu130): the installed torch is "
            "older or built for other GPUs; upgrade it")


def _gpu_sms(text: TextFacts) -> list[str]:
    sms = list(text.sms)
    for name in text.gpu_names:
        sm = sm_for_name(name)
        if sm and sm not in sms:
            sms.append(sm)
    return sms


def _arch(text: TextFacts) -> Advice:
    sms = [s for s in _gpu_sms(text) if s not in text.supported_sms
           and 30 <= int(s.split("_")[1]) <= 129]  # a real architecture, not a typo
    if not sms:
        return Advice((), ())
    command, why = wheel_for_sm(sms[0])
    named = f" ({text.gpu_names[0]})" if text.gpu_names else ""
    note = f"The text names the GPU's architecture: {sms[0]}{named}. {why}."
    if text.supported_sms:
        note += f" The installed wheel supports {' '.join(text.supported_sms)}."
    return Advice((note,), (Fix(f"Install a wheel built for {sms[0]}", command),),
                  drop=("whl/cu",))  # the generic wheel advice is for other GPUs


def _driver(text: TextFacts) -> Advice:
    if not text.driver_cuda:
        return Advice((), ())
    index = cuda_index_for(text.driver_cuda)
    note = (f"The message says the driver supports CUDA {text.driver_cuda} at most "
            "(torch prints it as 'found version NNNNN': 11040 = CUDA 11.4).")
    if index is None:
        need = min_driver_text("11.8") or "a newer driver"
        return Advice((note + " No current PyTorch wheel runs on it: the oldest index is "
                       "cu118.",),
                      (Fix(f"Update the driver: {need} or newer",
                           "sudo apt install nvidia-driver-580   # Linux; or the installer "
                           "from nvidia.com/Download"),),
                      drop=("whl/cu", "nvidia-driver"))  # no wheel fits; the driver fix is first
    return Advice((note + f" The newest wheel index that driver supports is {index}.",),
                  (Fix(f"Keep the driver: install the {index} wheel, which it supports",
                       install_command(index)),),
                  drop=("whl/cu",))


def _visible(text: TextFacts) -> Advice:
    value = text.visible_devices
    if value is None:
        return Advice((), ())
    note = (f"The text sets CUDA_VISIBLE_DEVICES={value!r}: CUDA then sees only the GPUs "
            "listed, renumbered from 0, so on a machine with fewer GPUs than that index (or "
            "with -1 or an empty value) no GPU is left, whatever the driver.")
    return Advice((note,), (Fix(
        f"Remove CUDA_VISIBLE_DEVICES={value!r} or set it to a GPU that exists "
        "(`nvidia-smi -L` lists them), before torch first touches CUDA",
        "import os\nos.environ.pop('CUDA_VISIBLE_DEVICES', None)  # before `import torch`\n"
        "# or from the shell: CUDA_VISIBLE_DEVICES=0 python train.py"),))


def _oom(text: TextFacts, machine: Machine | None) -> Advice:
    notes: list[str] = []
    oom = text.oom
    if oom.get("tried") and oom.get("total"):
        notes.append(f"It tried to allocate {oom['tried']} on GPU {oom.get('gpu') or '?'} "
                     f"({oom['total']} in total, {oom.get('free', '?')} free).")
    tried, total = size_bytes(oom.get("tried")), size_bytes(oom.get("total"))
    if tried and total and tried > total:
        notes.append("That one allocation is larger than the whole GPU: no setting frees "
                     "that much; the batch (or image, sequence) size is the fix.")
    unalloc, by_torch = size_bytes(oom.get("unallocated")), size_bytes(oom.get("allocated"))
    if unalloc and by_torch is not None and unalloc > 0.2 * max(by_torch, 1.0):
        notes.append(f"{oom['unallocated']} is reserved by PyTorch but unallocated: free "
                     "blocks of the wrong sizes (fragmentation). "
                     "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True lets segments grow "
                     "instead.")
    for pid, used in text.oom_processes:
        held = size_bytes(used)
        if held and by_torch and by_torch >= 0.8 * held:
            notes.append(f"Process {pid} holds {used} on that GPU, about what PyTorch itself "
                         "allocated: most likely the failing script (in a container NVML "
                         "names it by its host PID); its own tensors are the problem.")
        else:
            notes.append(f"Process {pid} holds {used} on that GPU: unless that PID is the "
                         "failing script itself (`nvidia-smi` or `devcheck gpus` shows the "
                         "name), another program, a previous run or a notebook kernel, must "
                         "end first.")
    if machine is not None and machine.gpu_memory:
        notes.append("On this machine now (NVML): " + "; ".join(machine.gpu_memory))
    return Advice(tuple(notes), ())


def _from_gpu_machine(text: TextFacts) -> bool:
    """The pasted text shows its machine has an NVIDIA GPU (so it is not this GPU-less one)."""
    return bool(text.driver_cuda or text.gpu_names or text.sms or text.visible_devices)


def _platform(pitfall_id: str, text: TextFacts, machine: Machine | None) -> Advice:
    """Advice from this machine, when the error plausibly comes from it."""
    if machine is None or pitfall_id not in _CUDA_SETUP or pitfall_id in _NEEDS_GPU:
        return Advice((), ())
    if machine.platform == "darwin" and text.os_hint in (None, "macos"):
        return Advice(("This machine runs macOS: there are no CUDA builds of PyTorch for it; "
                       "Apple silicon has the MPS device instead.",),
                      (Fix("On a Mac use MPS (Apple silicon) or the CPU, not CUDA",
                           "device = torch.device('mps' if torch.backends.mps.is_available() "
                           "else 'cpu')"),))
    if machine.nvidia_gpus == 0 and not _from_gpu_machine(text):
        return Advice(("This machine has no NVIDIA GPU on its PCI bus: torch can only use "
                       "the CPU here; installing drivers or CUDA wheels will not change that.",),
                      (Fix("Use the CPU here (and CUDA only where a GPU exists)",
                           "device = torch.device('cuda' if torch.cuda.is_available() else "
                           "'cpu')"),))
    return Advice((), ())


# Errors that only happen on a machine with an NVIDIA GPU and driver: this machine's lack of
# one says nothing about them (the text came from elsewhere).
_NEEDS_GPU = {"driver_too_old", "gpu_arch_not_in_wheel", "cuda_unknown_error"}
# Pitfalls whose usual fix is "install/repair CUDA": wrong advice on a Mac or a GPU-less box.
_CUDA_SETUP = {"no_driver", "cpu_only_wheel", "driver_too_old", "gpu_arch_not_in_wheel",
               "cuda_unknown_error", "invalid_device_ordinal"}


def tailor(pitfall_id: str, fixes: tuple[Fix, ...], text: TextFacts,
           machine: Machine | None) -> Advice:
    """Notes and fixes for this error on its machine, best fix first."""
    parts: list[Advice] = []
    platform = _platform(pitfall_id, text, machine)
    if pitfall_id in ("no_driver", "invalid_device_ordinal", "cuda_unknown_error"):
        parts.append(_visible(text))
    if pitfall_id == "driver_too_old":
        parts.append(_driver(text))
    if pitfall_id == "gpu_arch_not_in_wheel":
        parts.append(_arch(text))
    if pitfall_id in ("cuda_out_of_memory", "cublas_error", "cudnn_error"):
        parts.append(_oom(text, machine))
    notes = tuple(n for a in (platform, *parts) for n in a.notes)
    first = tuple(f for a in (platform, *parts) for f in a.fixes)
    drop = tuple(d for a in parts for d in a.drop)
    rest = tuple(f for f in fixes if not any(d in f.code for d in drop))
    if machine is not None and machine.platform == "darwin" and platform.fixes:
        rest = tuple(f for f in rest if "whl/cu" not in f.code and "nvidia-driver" not in f.code)
        first = tuple(f for f in first if "whl/cu" not in f.code and "nvidia" not in f.code
                      or f in platform.fixes)
    return Advice(notes, first + rest)
