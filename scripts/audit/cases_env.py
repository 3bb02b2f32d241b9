"""Hostile audit cases: broken environments and hostile inputs from outside (prefix "env.").

- a fake broken ``torch`` first on PYTHONPATH (segfault, ``os._exit``, ImportError,
  RuntimeError, SystemExit(0), KeyboardInterrupt, a 600 s sleep, 50 MB of chatter, a
  non-UTF-8 / missing / garbage ``torch/version.py``) against every command that may touch it;
- a fake broken ``pynvml`` (raising on import, hanging in nvmlInit, a malformed process
  record, escape codes and newlines in GPU and process names, a GPU lost mid-run,
  NVMLError_Unknown everywhere), built from tests/fakes/fake_pynvml.py by a shim;
- hostile environment variables, closed or odd standard streams, damaged Fashion-MNIST files.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import signal
import struct
from pathlib import Path

from audit.harness import (
    Case,
    Check,
    Env,
    Ran,
    Setup,
    all_of,
    chain,
    error_names,
    exists,
    fake_pynvml,
    json_doc,
    json_lines,
    names_any,
    no_temporaries,
    not_in_output,
    took_at_most,
)

TORCH_PATH = "export PYTHONPATH={tmp}/ft; "
NVML_PATH = "export PYTHONPATH={tmp}/nv; "
TRAIN = "{sm} train --epochs 1 --device cpu --checkpoint-dir {tmp}/ck"
MIRROR = Path("/usr/share/datasets/fashion-mnist")

# --- fake torch packages ---------------------------------------------------------------

_WORKING = '''\
import types
__version__ = {version!r}
version = types.SimpleNamespace(cuda={cuda!r}, hip=None)
class _Cuda:
    @staticmethod
    def is_available():
        return False
    @staticmethod
    def get_arch_list():
        return []
    @staticmethod
    def device_count():
        return 0
cuda = _Cuda()
'''
_NOISE = ("import sys\n"
          "line = 'W torch/csrc/noisy.cpp:42 a very chatty native library ' + 'x' * 70 + '\\n'\n"
          "for _ in range(400_000):\n"
          "    sys.{stream}.write(line)\n"
          "sys.{stream}.flush()\n"
          "raise ImportError('libtorch_cuda.so: undefined symbol: cudaGraphInstantiate')\n")
TORCHES: dict[str, str] = {
    "segv": "import ctypes\nctypes.string_at(0)\n",
    "exit7": "import os, sys\nsys.stderr.write('bye\\n')\nos._exit(7)\n",
    "importerror": "raise ImportError('libcudnn.so.9: cannot open shared object file: "
                   "No such file or directory')\n",
    "runtimeerror": "raise RuntimeError('CUDA driver initialization failed, you might not "
                    "have a CUDA gpu.')\n",
    "sysexit0": "raise SystemExit(0)\n",
    "kbint": "raise KeyboardInterrupt\n",
    "sleep": "import time\ntime.sleep(600)\n",
    "stderr50": _NOISE.format(stream="stderr"),
    "stdout50": _NOISE.format(stream="stdout"),
    "escape": "raise ImportError('libcudnn.so.9\\x1b[2J\\x1b]0;pwned\\x07\\nFAKE-LINE: ok')\n",
    "working": _WORKING.format(version="2.5.1+cu124", cuda="12.4"),
    "garbage": _WORKING.format(version="garbage", cuda="garbage"),
}
VERSION_FILES: dict[str, bytes | None] = {
    "nonutf8": (b"__version__ = '2.5.1+cu124'\n# \xff\xfe\xfa not UTF-8 \xe9t\xe9\n"
                b"debug = False\ncuda = '12.4'\ngit_version = '\xff\xfe'\nhip = None\n"),
    "missing": None,
    "garbage": b"__version__ = 'garbage'\ncuda = 'garbage'\nhip = 'garbage'\n",
}


def fake_torch(kind: str, version: str | None = None) -> Setup:
    """Setup: {tmp}/ft/torch/__init__.py of ``kind``; version.py from VERSION_FILES[version]."""
    def setup(tmp: Path, env: Env, memo: dict) -> None:
        pkg = tmp / "ft" / "torch"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(TORCHES[kind], encoding="utf-8")
        data = VERSION_FILES.get(version or "")
        if data is not None:
            (pkg / "version.py").write_bytes(data)
        (tmp / "job.py").write_text("import torch\nx = torch.ones(3)\nx.to('cuda')\n")
    return setup


# --- fake pynvml (harness.fake_pynvml: a shim over tests/fakes/fake_pynvml.py) ----------

_TWO = "sc = fk.two_gpus()\nmod = fk.build_module(sc)\n"
_LOST = '''\
class Late(fk.FakeGpu):
    """A GPU that falls off the bus {when}."""
    @property
    def lost(self):
        return "NVMLError_GpuIsLost" if {cond} else None
    @lost.setter
    def lost(self, value):
        pass
sc = fk.Scenario(gpus=[fk.FakeGpu(name="NVIDIA A100-SXM4-40GB", uuid="GPU-good"),
                       Late(name="NVIDIA A100-SXM4-40GB", uuid="GPU-late", util_gpu=50)])
mod = fk.build_module(sc)
'''
NVMLS: dict[str, str] = {
    "sysexit": "raise SystemExit(3)\nmod = None\n",
    "kbint": "raise KeyboardInterrupt\nmod = None\n",
    "importerror": "raise ImportError('libnvidia-ml.so.1: cannot open shared object file')\n"
                   "mod = None\n",
    "hang": "sc = fk.one_gpu()\nsc.hang_s = 600\nmod = fk.build_module(sc)\n",
    "badproc": ("sc = fk.one_gpu(memory_used=3 * GiB, processes=[\n"
                "    fk.FakeProcess('garbage', GiB), fk.FakeProcess(4242, 2 * GiB)])\n"
                "mod = fk.build_module(sc)\n"),
    "oddpids": ("sc = fk.one_gpu(memory_used=3 * GiB, processes=[\n"
                "    fk.FakeProcess(2**70, GiB), fk.FakeProcess(-1, GiB),\n"
                "    types.SimpleNamespace(),\n"
                "    fk.FakeProcess(None, None), fk.FakeProcess(4242, 2 * GiB)])\n"
                "mod = fk.build_module(sc)\n"),
    "escape": ("E = '\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m'\n"
               "sc = fk.one_gpu(name='NVIDIA ' + E + 'GeForce\\nFAKE-LINE: all good',\n"
               "                uuid='GPU-' + E + '\\nFAKE-UUID', memory_used=3 * GiB,\n"
               "                processes=[fk.FakeProcess(4242, 2 * GiB)],\n"
               "                process_util=[fk.FakeProcessUtil(4242, 2**62, 50)])\n"
               "sc.driver_version = '580.65.06' + E + '\\nFAKE-DRIVER'\n"
               "mod = fk.build_module(sc)\n"
               "mod.nvmlSystemGetProcessName = lambda pid: (\n"
               "    b'\\x1b[31mpython\\x1b[0m\\nFAKE-PROC: train.py \\x1b[2J\\xff')\n"),
    "lost_calls": _LOST.format(when="after a few calls", cond="len(sc.calls) > 12"),
    "lost_time": _LOST.format(when="1.5 s into the run", cond="time.monotonic() - T0 > 1.5"),
    "unknown": ("sc = fk.two_gpus()\nmod = fk.build_module(sc)\n"
                "def _unknown(*args):\n"
                "    raise fk.ERRORS['NVMLError_Unknown']()\n"
                "for _name in dir(mod):\n"
                "    if _name.startswith('nvml') and _name not in ('nvmlInit', 'nvmlShutdown'):\n"
                "        setattr(mod, _name, _unknown)\n"),
    "unknown_init": "sc = fk.Scenario(init_error='NVMLError_Unknown')\nmod = fk.build_module(sc)\n",
    "two": _TWO,
}


def fake_nvml(kind: str) -> Setup:
    """Setup: {tmp}/nv/pynvml.py, the fake pynvml of ``kind`` (NVMLS)."""
    return fake_pynvml(NVMLS[kind], folder="nv")


# --- checks ------------------------------------------------------------------------------

def no_raw_escapes(r: Ran) -> str | None:
    """No ESC / BEL / CSI reaches the output raw, and no injected line starts a line."""
    for name, text in (("stdout", r.out), ("stderr", r.err)):
        for ch in ("\x1b", "\x07", "\x9b"):
            if ch in text:
                i = text.index(ch)
                return f"wrong: raw {ch!r} on {name}: {text[max(0, i - 60):i + 30]!r}"
        m = re.search(r"^\s*FAKE-[A-Z]+", text, re.M)
        if m:
            return f"wrong: an injected newline in a name started a line on {name}: " \
                   f"{m.group(0)!r}"
    return None


def err_lines(n: int) -> Check:
    def check(r: Ran) -> str | None:
        lines = [ln for ln in r.err.splitlines() if ln.strip()]
        return None if len(lines) <= n else \
            f"message: {len(lines)} lines on stderr (expected at most {n}): {lines[:3]}"
    return check


def wheel_not_cpu_only(r: Ran) -> str | None:
    """An unreadable version.py means "build unknown", never "CPU-only"."""
    if "cpu-only" in r.text.lower() or "cpu_only_wheel" in r.text:
        return "wrong: an unknown build (no version.py) is reported as a CPU-only wheel"
    return None


# --- hostile Fashion-MNIST folders -------------------------------------------------------

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def data_setup(kind: str) -> Setup:
    def setup(tmp: Path, env: Env, memo: dict) -> None:
        raw = tmp / "d" / "FashionMNIST" / "raw"
        src = Path(env.data) / "FashionMNIST" / "raw"
        if kind == "raw_is_file":
            raw.parent.mkdir(parents=True)
            raw.write_text("not a folder\n")
            return
        raw.mkdir(parents=True)
        if kind in ("gz_truncated", "gz_not_gzip"):
            for name in NAMES:
                shutil.copy(MIRROR / f"{name}.gz", raw / f"{name}.gz")
            victim = raw / ("train-images-idx3-ubyte.gz" if kind == "gz_truncated"
                            else "train-labels-idx1-ubyte.gz")
            if kind == "gz_truncated":
                victim.write_bytes(victim.read_bytes()[:100_000])
            else:
                victim.write_bytes(b"<html><body>404 Not Found</body></html>\n")
        elif kind in ("labels_count", "label_range"):
            for name in NAMES:
                (raw / name).symlink_to(src / name)
            if kind == "labels_count":  # 50000 labels for 60000 images, header and size agree
                (raw / NAMES[1]).unlink()
                body = (src / NAMES[1]).read_bytes()[8:8 + 50000]
                (raw / NAMES[1]).write_bytes(struct.pack(">II", 0x801, 50000) + body)
            else:  # one label byte out of range inside an otherwise well-formed file
                (raw / NAMES[3]).unlink()
                data = bytearray((src / NAMES[3]).read_bytes())
                data[8 + 1234] = 200
                (raw / NAMES[3]).write_bytes(bytes(data))
        elif kind == "gz_inner_truncated":  # a valid gzip whose content is cut short
            for name in NAMES:
                shutil.copy(MIRROR / f"{name}.gz", raw / f"{name}.gz")
            content = (src / NAMES[0]).read_bytes()[:1_000_000]
            (raw / f"{NAMES[0]}.gz").write_bytes(gzip.compress(content))
        # "empty": nothing
    return setup


def finding_names(*words: str) -> Check:
    """A warn/error finding (not just a fact) names the failure: text report or JSON."""
    def check(r: Ran) -> str | None:
        try:
            doc = json.loads(r.out)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            found = " ".join(json.dumps(f) for f in doc.get("findings", [])
                             if f.get("severity") in ("warn", "error"))
        else:
            found = "\n".join(ln for ln in r.out.split("\nFindings", 1)[-1].splitlines()
                              if "[warn]" in ln or "[ERROR]" in ln or ln.startswith("      "))
        missing = [w for w in words if w.lower() not in found.lower()]
        return (f"wrong: no warn/error finding names {', '.join(missing)} (exit {r.rc})"
                if missing else None)
    return check


def no_sgr(r: Ran) -> str | None:
    m = re.search(r"\x1b\[[0-9;]*m", r.text)
    return f"wrong: a colour code {m.group(0)!r} despite NO_COLOR=1" if m else None


NOT_A_FOLDER = names_any("not a directory", "not a folder", "is a file",
                         stderr_only=True)  # FashionMNIST/raw is a file, not a folder
NOT_HUNG = ("timed out", "did not answer", "wedged")  # nothing hung in these cases


def _torch_cases() -> list[Case]:
    cases: list[Case] = []
    # doctor --json in every failure mode: one JSON document naming the failure
    json_words = {"segv": ("SIGSEGV", "import"), "exit7": ("code 7",),
                  "importerror": ("libcudnn.so.9",),
                  "runtimeerror": ("CUDA driver initialization",),
                  "sysexit0": ("SystemExit",), "kbint": ("KeyboardInterrupt",),
                  "stderr50": ("undefined symbol",), "stdout50": ("undefined symbol",),
                  "escape": ("libcudnn.so.9",)}
    for kind, words in json_words.items():
        cases.append(Case(
            f"env.torch.{kind}.doctor_json", "env-torch",
            TORCH_PATH + "exec {dc} doctor --json", exit="1", timeout=180,
            setup=fake_torch(kind),
            check=all_of(json_doc(*words), finding_names("torch"), no_raw_escapes),
            note=f"fake torch ({kind}) on import: still one JSON document naming it"))
    for kind, words in (("segv", ("SIGSEGV", "torch")), ("escape", ("libcudnn.so.9", "torch"))):
        cases.append(Case(
            f"env.torch.{kind}.doctor", "env-torch", TORCH_PATH + "exec {dc} doctor",
            exit="1", timeout=180, setup=fake_torch(kind),
            check=all_of(error_names(*words), no_raw_escapes, not_in_output(*NOT_HUNG)),
            note=f"fake torch ({kind}): an error finding naming it, exit 1"))
    sleep = fake_torch("sleep")
    cases += [
        Case("env.torch.sleep.doctor_timeout3", "env-torch",
             TORCH_PATH + "exec {dc} doctor --timeout 3", exit="1", timeout=60,
             setup=sleep, exclusive=True,
             check=all_of(took_at_most(9), error_names("timed out", "3", "import")),
             note="torch import sleeps 600 s: done near 3 s, says so, no orphan"),
        Case("env.torch.sleep.doctor_json_timeout3", "env-torch",
             TORCH_PATH + "exec {dc} doctor --json --timeout 3", exit="1", timeout=60,
             setup=sleep, exclusive=True, check=all_of(took_at_most(9), json_doc("timed out")),
             note="the same with --json"),
        Case("env.torch.sleep.gpus", "env-torch", TORCH_PATH + "exec {dc} gpus",
             exit="0", timeout=60, setup=sleep, check=took_at_most(8),
             note="gpus never imports torch: a sleeping torch costs nothing"),
        Case("env.torch.sleep.pitfalls_list", "env-torch",
             TORCH_PATH + "exec {dc} pitfalls list", exit="0", timeout=120, setup=sleep,
             check=all_of(took_at_most(20), error_names("tensor_to_not_inplace")),
             note="pitfalls list with a torch that sleeps 600 s on import"),
        Case("env.torch.sleep.lint", "env-torch", TORCH_PATH + "exec {dc} lint job.py",
             exit="1", timeout=90, setup=sleep,
             check=all_of(took_at_most(15), error_names("job.py:3", "tensor_to_not_inplace")),
             note="lint must not need torch (it sleeps 600 s on import)"),
        Case("env.torch.sleep.explain", "env-torch",
             TORCH_PATH + "printf 'RuntimeError: Expected all tensors to be on the same device, "
             "but found at least two devices, cuda:0 and cpu!\\n' | {dc} explain -",
             exit="0", timeout=90, setup=sleep,
             check=all_of(took_at_most(15), error_names("mixed_devices")),
             note="explain (with --here) never imports torch"),
        Case("env.torch.sleep.dist_preflight", "env-torch",
             TORCH_PATH + "exec {dc} dist --preflight-only --json", exit="0,1", timeout=90,
             setup=sleep, check=all_of(took_at_most(20), json_doc()),
             note="dist --preflight-only --json with a sleeping torch"),
        Case("env.torch.sleep.pitfalls_run_timeout5", "env-torch",
             TORCH_PATH + "exec {dc} pitfalls run tensor_to_not_inplace --device cpu "
             "--timeout 5", exit="1", timeout=240, setup=sleep,
             check=all_of(took_at_most(30), error_names("torch")),
             note="a torch that sleeps on import: is the lab's start bounded by --timeout?"),
    ]
    for kind, words in (("segv", ("torch", "SIGSEGV")), ("sysexit0", ("torch", "SystemExit")),
                        ("importerror", ("libcudnn.so.9",))):
        cases.append(Case(
            f"env.torch.{kind}.pitfalls_run", "env-torch",
            TORCH_PATH + "exec {dc} pitfalls run tensor_to_not_inplace --device cpu",
            exit="1", timeout=180, setup=fake_torch(kind), check=error_names(*words),
            note=f"pitfalls run with a fake torch ({kind}): the failure names torch and why"))
    cases.append(Case(
        "env.torch.segv.softmax_train", "env-torch",
        TORCH_PATH + "exec " + TRAIN + " --data-root {data}", exit="139,-11", timeout=120,
        setup=fake_torch("segv"), crash_dump=True,
        check=error_names("Segmentation fault", "torch/__init__.py", "_import_torch"),
        note="softmax train with a torch whose import segfaults: the process dies with torch "
             "(no in-process catch exists); faulthandler's dump must name torch's import "
             "(without it: no output at all). devcheck doctor probes torch in a child instead"))
    for kind, words in (("importerror", ("torch", "libcudnn.so.9")), ("sysexit0", ("torch",)),
                        ("kbint", ("torch",))):
        cases.append(Case(
            f"env.torch.{kind}.softmax_train", "env-torch",
            TORCH_PATH + "exec " + TRAIN + " --data-root {data}", exit="!0", timeout=120,
            setup=fake_torch(kind), check=all_of(error_names(*words), err_lines(3)),
            note=f"softmax train with a fake torch ({kind}): one clear error naming torch"))
    # the wheel, read from torch/version.py without importing torch
    cases += [
        Case("env.torch.version_nonutf8.gpus_json", "env-torch",
             TORCH_PATH + "exec {dc} gpus --json", exit="0", timeout=60,
             setup=fake_torch("working", "nonutf8"),
             check=json_doc('"installed": true', "2.5.1+cu124", '"cuda_version": "12.4"'),
             note="a non-UTF-8 torch/version.py: installed, its version and CUDA still read"),
        Case("env.torch.version_missing.gpus_2gpu", "env-torch",
             "export PYTHONPATH={tmp}/ft:{tmp}/nv; exec {dc} gpus", exit="0,1", timeout=60,
             setup=chain(fake_torch("working", "missing"), fake_nvml("two")),
             check=all_of(error_names("version.py"), wheel_not_cpu_only),
             note="no torch/version.py on a 2-GPU machine: the build is unknown, not CPU-only"),
        Case("env.torch.version_garbage.doctor_json", "env-torch",
             "export PYTHONPATH={tmp}/ft:{tmp}/nv; exec {dc} doctor --json", exit="0,1",
             timeout=120, setup=chain(fake_torch("garbage", "garbage"), fake_nvml("two")),
             check=json_doc("garbage"),
             note="torch and version.py say version and CUDA 'garbage', 2 GPUs"),
    ]
    return cases


def _nvml_cases() -> list[Case]:
    run2 = NVML_PATH + "exec {dc} run -i 0.1 --out {tmp}/o -- sleep 2"
    cases = [
        Case("env.nvml.sysexit.gpus", "env-nvml", NVML_PATH + "exec {dc} gpus",
             exit="0,1", timeout=60, setup=fake_nvml("sysexit"),
             check=all_of(error_names("pynvml", "SystemExit"), not_in_output(*NOT_HUNG)),
             note="pynvml raises SystemExit(3) on import: a finding, not a timeout"),
        Case("env.nvml.kbint.doctor_json", "env-nvml", NVML_PATH + "exec {dc} doctor --json",
             exit="0,1", timeout=180, setup=fake_nvml("kbint"),
             check=all_of(json_doc("pynvml", "KeyboardInterrupt"), not_in_output(*NOT_HUNG)),
             note="pynvml raises KeyboardInterrupt on import"),
        Case("env.nvml.importerror.doctor_json", "env-nvml",
             NVML_PATH + "exec {dc} doctor --json", exit="0,1", timeout=180,
             setup=fake_nvml("importerror"),
             check=all_of(json_doc("pynvml", "libnvidia-ml.so.1"), not_in_output(*NOT_HUNG)),
             note="pynvml raises ImportError on import"),
        Case("env.nvml.kbint.run_sleep2", "env-nvml", run2, exit="0", timeout=90,
             setup=fake_nvml("kbint"),
             check=all_of(not_in_output(*NOT_HUNG), exists("o/summary.json", nonempty=True)),
             note="devcheck run, pynvml raises KeyboardInterrupt on import"),
        Case("env.nvml.sysexit.run_sleep2", "env-nvml", run2, exit="0", timeout=90,
             setup=fake_nvml("sysexit"),
             check=all_of(not_in_output(*NOT_HUNG), exists("o/summary.json", nonempty=True)),
             note="devcheck run, pynvml raises SystemExit(3) on import"),
        Case("env.nvml.hang.doctor", "env-nvml", NVML_PATH + "exec {dc} doctor --timeout 5",
             exit="0,1", timeout=120, setup=fake_nvml("hang"), exclusive=True,
             check=all_of(took_at_most(40), error_names("NVML", "timed out")),
             note="nvmlInit hangs: bounded, said, the process still exits"),
        Case("env.nvml.hang.gpus_json", "env-nvml", NVML_PATH + "exec {dc} gpus --json",
             exit="0,1", timeout=120, setup=fake_nvml("hang"), exclusive=True,
             check=all_of(took_at_most(30), json_doc("timed out")),
             note="gpus --json with a hanging nvmlInit"),
        Case("env.nvml.hang.gpus_watch_json", "env-nvml",
             NVML_PATH + "exec {dc} gpus --watch --json -i 0.2", exit="0,130", timeout=60,
             setup=fake_nvml("hang"), signal=(signal.SIGINT, 2.5), exclusive=True,
             check=json_lines(), note="gpus --watch with a hanging nvmlInit, Ctrl-C after 2.5 s"),
        Case("env.nvml.hang.run_sleep2", "env-nvml",
             NVML_PATH + "exec {dc} run --out {tmp}/o -- sleep 2", exit="0", timeout=90,
             setup=fake_nvml("hang"), exclusive=True,
             check=all_of(took_at_most(30), exists("o/summary.json", nonempty=True)),
             note="devcheck run with a hanging nvmlInit: the job still runs and ends"),
        Case("env.nvml.badproc.gpus", "env-nvml", NVML_PATH + "exec {dc} gpus",
             exit="0,1", timeout=60, setup=fake_nvml("badproc"),
             check=all_of(error_names("4242", "process record"), not_in_output(*NOT_HUNG)),
             note="one malformed process record (pid 'garbage'): kept out, and said"),
        Case("env.nvml.badproc.run_sleep2", "env-nvml", run2, exit="0", timeout=90,
             setup=fake_nvml("badproc"),
             check=all_of(not_in_output(*NOT_HUNG), exists("o/summary.json", nonempty=True)),
             note="devcheck run sampling a malformed process record"),
        Case("env.nvml.oddpids.doctor_json", "env-nvml", NVML_PATH + "exec {dc} doctor --json",
             exit="0,1", timeout=180, setup=fake_nvml("oddpids"), check=json_doc("4242"),
             note="pids 2**70, -1, None and a record without pid"),
        Case("env.nvml.oddpids.run_sleep2", "env-nvml", run2, exit="0", timeout=90,
             setup=fake_nvml("oddpids"),
             check=all_of(not_in_output(*NOT_HUNG), exists("o/summary.json", nonempty=True)),
             note="devcheck run sampling pids 2**70, -1, None"),
    ]
    for cmd in ("doctor", "doctor --json", "gpus", "gpus --markdown"):
        slug = cmd.replace(" --", "_")
        check = all_of(no_raw_escapes, not_in_output(*NOT_HUNG), error_names("GeForce"))
        if "json" in cmd:
            check = all_of(check, json_doc("GeForce"))
        cases.append(Case(f"env.nvml.escape.{slug}", "env-nvml", NVML_PATH + f"exec {{dc}} {cmd}",
                          exit="0,1", timeout=180, setup=fake_nvml("escape"), check=check,
                          note="escape codes and newlines in GPU, driver and process names"))
    cases += [
        Case("env.nvml.escape.gpus_watch_json", "env-nvml",
             NVML_PATH + "exec {dc} gpus --watch --json -i 0.2", exit="0", timeout=60,
             setup=fake_nvml("escape"), signal=(signal.SIGINT, 2.5),
             check=all_of(json_lines(1), no_raw_escapes),
             note="gpus --watch --json with hostile names, Ctrl-C after 2.5 s"),
        Case("env.nvml.escape.gpus_watch", "env-nvml",
             NVML_PATH + "exec {dc} gpus --watch -i 0.2", exit="0", timeout=60,
             setup=fake_nvml("escape"), signal=(signal.SIGINT, 2.5),
             check=all_of(no_raw_escapes, error_names("GeForce")),
             note="gpus --watch (text, not a TTY) with hostile names"),
        Case("env.nvml.escape.run_sleep2", "env-nvml", run2, exit="0", timeout=90,
             setup=fake_nvml("escape"), check=all_of(no_raw_escapes, not_in_output(*NOT_HUNG)),
             note="devcheck run's verdicts with hostile GPU and process names"),
        Case("env.nvml.lost.doctor_json", "env-nvml", NVML_PATH + "exec {dc} doctor --json",
             exit="0,1", timeout=180, setup=fake_nvml("lost_calls"),
             check=all_of(json_doc("GpuIsLost", "GPU-good"), finding_names("lost"),
                          not_in_output(*NOT_HUNG)),
             note="GPU 1 falls off the bus mid-query: a finding; GPU 0 still listed"),
        Case("env.nvml.lost.gpus_watch_json", "env-nvml",
             NVML_PATH + "exec {dc} gpus --watch --json -i 0.2", exit="0", timeout=60,
             setup=fake_nvml("lost_time"), signal=(signal.SIGINT, 3.5),
             check=all_of(json_lines(2), error_names("lost"), not_in_output(*NOT_HUNG)),
             note="GPU lost 1.5 s into a watch: the stream goes on and says so"),
        Case("env.nvml.lost.run_sleep3", "env-nvml",
             NVML_PATH + "exec {dc} run -i 0.1 --out {tmp}/o -- sleep 3", exit="0", timeout=90,
             setup=fake_nvml("lost_time"),
             check=all_of(error_names("lost"), not_in_output(*NOT_HUNG),
                          exists("o/summary.json", nonempty=True)),
             note="GPU lost mid-run under devcheck run: the job goes on, the loss is reported"),
        Case("env.nvml.unknown.doctor_json", "env-nvml", NVML_PATH + "exec {dc} doctor --json",
             exit="0,1", timeout=180, setup=fake_nvml("unknown"),
             check=all_of(json_doc("Unknown"), finding_names("Unknown"), not_in_output(*NOT_HUNG)),
             note="NVMLError_Unknown from every call after nvmlInit: a finding"),
        Case("env.nvml.unknown.gpus", "env-nvml", NVML_PATH + "exec {dc} gpus",
             exit="0,1", timeout=60, setup=fake_nvml("unknown"),
             check=all_of(finding_names("Unknown"), not_in_output(*NOT_HUNG, "driver None")),
             note="NVMLError_Unknown everywhere, text"),
        Case("env.nvml.unknown.gpus_watch_json", "env-nvml",
             NVML_PATH + "exec {dc} gpus --watch --json -i 0.2", exit="0", timeout=60,
             setup=fake_nvml("unknown"), signal=(signal.SIGINT, 2.5),
             check=all_of(json_lines(1), error_names("Unknown"), not_in_output(*NOT_HUNG)),
             note="NVMLError_Unknown everywhere under --watch --json"),
        Case("env.nvml.unknown.run_sleep2", "env-nvml", run2, exit="0", timeout=90,
             setup=fake_nvml("unknown"),
             check=all_of(error_names("Unknown"), not_in_output(*NOT_HUNG),
                          exists("o/summary.json", nonempty=True)),
             note="devcheck run with NVMLError_Unknown everywhere"),
    ]
    return cases


def _env_cases() -> list[Case]:
    two = fake_nvml("two")
    cases: list[Case] = []
    for slug, value, words in (("minus1", "-1", ("CUDA_VISIBLE_DEVICES", "every GPU")),
                               ("empty", "", ("CUDA_VISIBLE_DEVICES", "every GPU")),
                               ("garbage", "garbage", ("CUDA_VISIBLE_DEVICES", "garbage")),
                               ("dup", "0,0", ("CUDA_VISIBLE_DEVICES", "every GPU")),
                               ("uuid", "GPU-deadbeef", ("CUDA_VISIBLE_DEVICES", "GPU-deadbeef"))):
        cases.append(Case(
            f"env.var.cvd_{slug}.gpus_2gpu", "env-vars",
            NVML_PATH + f"export CUDA_VISIBLE_DEVICES='{value}'; exec {{dc}} gpus",
            exit="0,1", timeout=60, setup=two, check=error_names(*words),
            note=f"CUDA_VISIBLE_DEVICES={value!r} on a 2-GPU machine"))
    cases += [
        Case("env.var.cvd_garbage.doctor_json_2gpu", "env-vars",
             NVML_PATH + "export CUDA_VISIBLE_DEVICES=garbage; exec {dc} doctor --json",
             exit="0,1", timeout=180, setup=two,
             check=json_doc("cuda_visible_devices", "garbage"),
             note="CUDA_VISIBLE_DEVICES=garbage, doctor --json on a 2-GPU machine"),
        Case("env.var.home_unset.softmax_train", "env-vars",
             "unset HOME; exec " + TRAIN + " --data-root {data} --plot {tmp}/c.png", exit="0",
             timeout=180, check=exists("c.png", nonempty=True),
             note="no HOME: matplotlib's config dir"),
        Case("env.var.home_unwritable.softmax_train", "env-vars",
             "export HOME=/dev/null XDG_CACHE_HOME=/dev/null/c XDG_CONFIG_HOME=/dev/null/c; "
             "exec " + TRAIN + " --data-root {data} --plot {tmp}/c.png", exit="0", timeout=180,
             check=exists("c.png", nonempty=True), note="HOME (and XDG dirs) not writable"),
        Case("env.var.posix_unicode.softmax_train", "env-vars",
             "export LANG=C LC_ALL=POSIX; exec {sm} train --epochs 1 --device cpu "
             "--data-root {data} --checkpoint-dir {tmp}/réglages-数据 "
             "--metrics-json {tmp}/métriques.json", exit="0", timeout=180,
             check=exists("réglages-数据/last.pt", "métriques.json", nonempty=True),
             note="LC_ALL=POSIX with unicode paths"),
        Case("env.var.posix_ascii.softmax_train", "env-vars",
             "export LANG=C LC_ALL=POSIX PYTHONUTF8=0; exec {sm} train --epochs 1 --device cpu "
             "--data-root {data} --checkpoint-dir {tmp}/réglages-数据", exit="0", timeout=180,
             check=exists("réglages-数据/last.pt", nonempty=True),
             note="LC_ALL=POSIX, UTF-8 mode off (ascii stdout), unicode checkpoint dir"),
        Case("env.var.posix_ascii.explain_unicode", "env-vars",
             "export LANG=C LC_ALL=POSIX PYTHONUTF8=0; mkdir -p {tmp}/données; "
             "printf 'File \"/home/zoë/données/train.py\", line 3\\nRuntimeError: Expected all "
             "tensors to be on the same device — cuda:0 and cpu\\n' > {tmp}/données/log.txt; "
             "exec {dc} explain {tmp}/données/log.txt", exit="0", timeout=90,
             check=error_names("mixed_devices"),
             note="explain, ascii locale, a unicode path and unicode text"),
        Case("env.var.term_dumb.gpus_watch", "env-vars",
             NVML_PATH + "export TERM=dumb; exec {dc} gpus --watch -i 0.2", exit="0",
             timeout=60, setup=two, signal=(signal.SIGINT, 2.5), check=no_raw_escapes,
             note="TERM=dumb, stdout a file: --watch must not draw with escape codes"),
        Case("env.var.no_color.doctor_tty", "env-vars",
             "export NO_COLOR=1 TERM=xterm-256color; exec script -qefc '{dc} doctor' /dev/null",
             exit="0", timeout=180, check=no_sgr,
             note="NO_COLOR=1 on a terminal (script's pty): no colour codes"),
        Case("env.var.columns5.doctor", "env-vars", "export COLUMNS=5; exec {dc} doctor",
             exit="0", timeout=180, note="COLUMNS=5: wrapping must not break"),
        Case("env.var.pywarn_error.doctor", "env-vars",
             "export PYTHONWARNINGS=error; exec {dc} doctor", exit="0", timeout=180,
             check=not_in_output("import failed"),
             note="PYTHONWARNINGS=error: warnings must not become failures or noise"),
        Case("env.var.pywarn_error.softmax_train", "env-vars",
             "export PYTHONWARNINGS=error; exec " + TRAIN + " --data-root {data} --plot "
             "{tmp}/c.png", exit="0", timeout=180, check=exists("c.png", nonempty=True),
             note="PYTHONWARNINGS=error for the trainer"),
        Case("env.var.tmpdir_missing.doctor", "env-vars",
             "export TMPDIR={tmp}/missing; exec {dc} doctor", exit="0", timeout=180,
             note="TMPDIR points to a missing folder"),
        Case("env.var.tmpdir_missing.pitfalls_run", "env-vars",
             "export TMPDIR={tmp}/missing; exec {dc} pitfalls run tensor_to_not_inplace "
             "--device cpu", exit="0", timeout=180, note="TMPDIR missing, the lab"),
        Case("env.var.tmpdir_missing.run", "env-vars",
             "export TMPDIR={tmp}/missing; exec {dc} run --out {tmp}/o -- sleep 1", exit="0",
             timeout=120, check=exists("o/summary.json", nonempty=True),
             note="TMPDIR missing, devcheck run"),
        Case("env.var.mplbackend_bogus.softmax_plot", "env-vars",
             "export MPLBACKEND=bogus; exec " + TRAIN + " --data-root {data} --plot {tmp}/c.png",
             exit="0", timeout=180, check=exists("c.png", nonempty=True),
             note="MPLBACKEND=bogus: --plot c.png needs no GUI backend"),
        Case("env.var.mplbackend_bogus.softmax_default_plot", "env-vars",
             "export MPLBACKEND=bogus; exec " + TRAIN + " --data-root {data}",
             exit="0", timeout=180, check=exists("ck/curves.png", nonempty=True),
             note="MPLBACKEND=bogus: the default curves.png"),
        Case("env.var.mplbackend_bogus.run_plot", "env-vars",
             "export MPLBACKEND=bogus; exec {dc} run --out {tmp}/o -- sleep 1", exit="0",
             timeout=120, check=exists("o/timeline.png", nonempty=True),
             note="MPLBACKEND=bogus: devcheck run's timeline.png"),
        Case("env.var.mplbackend_bogus.predict", "env-vars",
             TRAIN + " --data-root {data} >/dev/null && export MPLBACKEND=bogus && exec "
             "{sm} predict --checkpoint {tmp}/ck/last.pt --data-root {data} -n 4 "
             "--out {tmp}/p.png", exit="0", timeout=240, check=exists("p.png", nonempty=True),
             note="MPLBACKEND=bogus: softmax predict's figure"),
        Case("env.var.torch_home_unwritable.softmax_train", "env-vars",
             "export TORCH_HOME=/dev/null/torch; exec " + TRAIN + " --data-root {data}",
             exit="0", timeout=180, note="TORCH_HOME not writable"),
    ]
    return cases


def _stream_cases() -> list[Case]:
    return [
        Case("env.stream.doctor_stdout_closed", "env-streams", "exec {dc} doctor >&-",
             exit="any", timeout=180, check=err_lines(3),
             note="stdout closed: one line of error or a clean exit"),
        Case("env.stream.doctor_stderr_closed", "env-streams", "exec {dc} doctor 2>&-",
             exit="0", timeout=180, check=error_names("Can torch use the GPU"),
             note="stderr closed: the report still on stdout, exit 0"),
        Case("env.stream.explain_stdin_closed", "env-streams", "exec {dc} explain - <&-",
             exit="2", timeout=60, check=all_of(error_names("stdin"), err_lines(3)),
             note="explain - with stdin closed: exit 2, one line"),
        Case("env.stream.doctor_head1", "env-streams",
             "set -o pipefail; {dc} doctor | head -1", exit="any", timeout=180,
             check=not_in_output("broken pipe", "BrokenPipeError"),
             note="doctor | head -1: a clean exit"),
        Case("env.stream.doctor_json_dev_full", "env-streams",
             "exec {dc} doctor --json > /dev/full", exit="!0", timeout=180,
             check=all_of(error_names("no space left"), err_lines(3)),
             note="--json to /dev/full: one line saying the disk is full"),
        Case("env.stream.softmax_train_head1", "env-streams",
             "set -o pipefail; " + TRAIN + " --epochs 3 --data-root {data} | head -1",
             exit="any", timeout=240,
             check=all_of(not_in_output("--data-root", "broken pipe"), no_temporaries,
                          err_lines(2)),
             note="train | head -1: no blame on --data-root, no temporaries"),
        Case("env.stream.softmax_train_stdout_closed", "env-streams",
             "exec " + TRAIN + " --data-root {data} >&-", exit="any", timeout=240,
             check=all_of(not_in_output("--data-root"), no_temporaries, err_lines(3)),
             note="train >&-"),
        Case("env.stream.gpus_watch_head3", "env-streams",
             NVML_PATH + "set -o pipefail; {dc} gpus --watch -i 0.1 | head -3", exit="any",
             timeout=60, setup=fake_nvml("two"), check=all_of(took_at_most(20), err_lines(1)),
             note="gpus --watch | head -3: ends when the reader goes"),
        Case("env.stream.gpus_watch_json_head3", "env-streams",
             NVML_PATH + "set -o pipefail; {dc} gpus --watch --json -i 0.1 | head -3",
             exit="any", timeout=60, setup=fake_nvml("two"),
             check=all_of(took_at_most(20), json_lines(3), err_lines(1)),
             note="gpus --watch --json | head -3"),
        Case("env.stream.run_stdout_closed", "env-streams",
             "exec {dc} run --out {tmp}/o -- sleep 1 >&-", exit="0", timeout=90,
             check=exists("o/summary.json", nonempty=True), note="devcheck run with stdout closed"),
    ]


def _data_cases() -> list[Case]:
    off = "export SOFTMAX_OFFLINE=1; exec " + TRAIN + " --data-root {tmp}/d"
    no_mirror = "export SOFTMAX_OFFLINE=1 SOFTMAX_MIRROR=; exec " + TRAIN + " --data-root {tmp}/d"
    return [
        Case("env.data.gz_truncated", "env-data", off, exit="!0", timeout=180,
             setup=data_setup("gz_truncated"),
             check=all_of(error_names("train-images-idx3-ubyte.gz", "truncated"), err_lines(3),
                          no_temporaries),
             note="a truncated .gz: named, and said truncated"),
        Case("env.data.gz_not_gzip", "env-data", off, exit="!0", timeout=180,
             setup=data_setup("gz_not_gzip"),
             check=all_of(error_names("train-labels-idx1-ubyte.gz", "gzip"), err_lines(3)),
             note="a .gz that is an HTML error page"),
        Case("env.data.gz_inner_truncated", "env-data", off, exit="!0", timeout=180,
             setup=data_setup("gz_inner_truncated"),
             check=all_of(error_names("train-images-idx3-ubyte"), err_lines(3), no_temporaries),
             note="a valid gzip of a cut-short file"),
        Case("env.data.labels_count", "env-data", off, exit="!0", timeout=180,
             setup=data_setup("labels_count"),
             check=all_of(error_names("train-labels-idx1-ubyte", "50000", "60000"),
                          err_lines(3)),
             note="50000 labels for 60000 images (header and size agree)"),
        Case("env.data.label_out_of_range", "env-data", off, exit="!0", timeout=180,
             setup=data_setup("label_range"),
             check=all_of(error_names("t10k-labels-idx1-ubyte", "200", "1234"), err_lines(3)),
             note="one label byte 200 inside a well-formed file"),
        Case("env.data.label_out_of_range_predict", "env-data",
             TRAIN + " --data-root {data} >/dev/null && export SOFTMAX_OFFLINE=1 && exec {sm} "
             "predict --checkpoint {tmp}/ck/last.pt --data-root {tmp}/d -n 4 --out {tmp}/p.png",
             exit="!0", timeout=240, setup=data_setup("label_range"),
             check=all_of(error_names("t10k-labels-idx1-ubyte", "200"), err_lines(3)),
             note="predict reading a test label out of range"),
        Case("env.data.raw_empty_mirror", "env-data", off, exit="0", timeout=240,
             setup=data_setup("empty"), check=error_names("/usr/share/datasets/fashion-mnist"),
             note="empty raw/: unpacked from Debian's mirror, and said so"),
        Case("env.data.raw_empty_nothing", "env-data", no_mirror, exit="!0", timeout=180,
             setup=data_setup("empty"),
             check=all_of(error_names("FashionMNIST/raw", "--data-root"), err_lines(3)),
             note="empty raw/, no mirror, offline: one message listing the ways"),
        Case("env.data.raw_is_file", "env-data", off, exit="!0", timeout=180,
             setup=data_setup("raw_is_file"),
             check=all_of(error_names("FashionMNIST/raw"), NOT_A_FOLDER, err_lines(3),
                          no_temporaries),
             note="raw/ is a file (Debian's mirror available)"),
        Case("env.data.raw_is_file_nothing", "env-data", no_mirror, exit="!0", timeout=180,
             setup=data_setup("raw_is_file"),
             check=all_of(error_names("FashionMNIST/raw"), NOT_A_FOLDER, err_lines(3)),
             note="raw/ is a file, no mirror, offline"),
    ]


CASES: list[Case] = (_torch_cases() + _nvml_cases() + _env_cases() + _stream_cases()
                     + _data_cases())
