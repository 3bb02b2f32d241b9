"""Hostile audit cases: files in and out (prefix ``file.``).

Output paths (``softmax train --plot/--metrics-json/--checkpoint-dir``, ``softmax predict
--out``, ``devcheck run --out``, pytest ``--devcheck-json``): suffixes, directories, missing
parents, ``/dev/full``, ``/proc``, ``/dev/null``, symlinks, read-only mounts, full disks,
``ulimit -f`` and odd names. Checkpoints (``--resume``, ``predict --checkpoint``): garbage,
foreign and hostile files. ``devcheck explain`` on long input, ``predict -n 10000``, and
``devcheck lint`` on odd trees.

A tmpfs mounted in a private namespace (``unshare -m``) vanishes with it: scripts that use
one save what the check needs (a listing, a copy of the survivor) before the namespace ends.
"""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import threading
import zipfile
from pathlib import Path

from audit.harness import (
    Case,
    Check,
    Env,
    Ran,
    Setup,
    all_of,
    error_names,
    exists,
    names_any,
    no_temporaries,
    not_in_output,
    one_line_error,
    sha,
    unchanged,
)

G = "files"
TRAIN = "{sm} train --device cpu --data-root {data} --epochs 1"
PREDICT = "{sm} predict --device cpu --data-root {data}"
TIME = "exec /usr/bin/time -f '%M %e %U %S' -o {tmp}/time.txt "  # RSS kB, wall, user, sys
PYTEST = "{py} -m pytest -q -p no:cacheprovider -c {tmp}/pytest.ini {tmp}/test_ok.py"
CK = "ck/last.pt"  # where resume cases keep the checkpoint under test


# --- setup helpers ---------------------------------------------------------------------------

_BASE_LOCK = threading.Lock()


def _base_checkpoint(tmp: Path, env: Env) -> Path:
    """A real 2-epoch checkpoint, trained once per audit run and shared (copied) by cases."""
    base = tmp.parent / "_file_base"
    ck = base / "ck" / "last.pt"
    with _BASE_LOCK:
        if not ck.is_file():
            base.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(
                [env.py, "-m", "softmax", "train", "--epochs", "2", "--device", "cpu",
                 "--data-root", env.data, "--checkpoint-dir", str(ck.parent),
                 "--plot", str(base / "curves.png")],
                cwd=base, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0 or not ck.is_file():
                raise RuntimeError(f"base checkpoint not trained (rc {proc.returncode}): "
                                   f"{proc.stderr.strip()[-300:]}")
    return ck


def _torch(tmp: Path, env: Env, code: str) -> None:
    """Run ``code`` (with torch) in the case's folder, to forge a checkpoint."""
    proc = subprocess.run([env.py, "-c", code], cwd=tmp, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"forging failed: {proc.stderr.strip()[-300:]}")


def setup(*steps: object, base: bool = False, remember: tuple[str, ...] = ()) -> Setup:
    """Compose a setup: optional base checkpoint copied to ``base.pt``, then each step
    (a callable ``(tmp, env)`` or a torch code string run in ``tmp``); remembers the sha of
    ``remember`` files. A failure raises: the harness reports it as a setup problem."""
    def run(tmp: Path, env: Env, memo: dict[str, object]) -> None:
        (tmp / "ck").mkdir(exist_ok=True)
        if base:
            (tmp / "base.pt").write_bytes(_base_checkpoint(tmp, env).read_bytes())
        for step in steps:
            if isinstance(step, str):
                _torch(tmp, env, step.replace("@TMP@", str(tmp)))
            else:
                step(tmp, env)  # type: ignore[operator]
        for name in remember:
            memo[name] = sha(tmp / name)
    return run


def write(name: str, data: bytes | str) -> object:
    def step(tmp: Path, env: Env) -> None:
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return step


def mkdirs(*names: str) -> object:
    def step(tmp: Path, env: Env) -> None:
        for n in names:
            (tmp / n).mkdir(parents=True, exist_ok=True)
    return step


def symlink(name: str, target: str) -> object:
    """``name`` -> ``target`` (absolute targets as given, else relative to the case folder)."""
    def step(tmp: Path, env: Env) -> None:
        link = tmp / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target if target.startswith("/") else str(tmp / target), link)
    return step


def fifo(name: str) -> object:
    def step(tmp: Path, env: Env) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(tmp / name)
    return step


def copy_base(name: str) -> object:
    def step(tmp: Path, env: Env) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes((tmp / "base.pt").read_bytes())
    return step


def pytest_files(tmp: Path, env: Env) -> None:
    (tmp / "pytest.ini").write_text("[pytest]\n")
    (tmp / "test_ok.py").write_text("def test_ok():\n    assert True\n")


GARBAGE = random.Random(9).randbytes(4096)
HOSTILE_ZIP = """
import os, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch @TMP@/pwned",))
torch.save({"epoch": 1, "model": "scratch", "state": Evil(), "generator": Evil()}, "ck/last.pt")
"""
HOSTILE_RAW = """
import os, pickle
class Evil:
    def __reduce__(self):
        return (os.system, ("touch @TMP@/pwned",))
with open("ck/last.pt", "wb") as f:
    pickle.dump({"epoch": 1, "model": "scratch", "state": Evil()}, f, protocol=2)
"""


def forge(line: str) -> str:
    """Torch code: load base.pt, apply ``line`` to the dict ``p``, save it as ck/last.pt."""
    return ("import torch\np = torch.load('base.pt', weights_only=True)\n" + line +
            "\ntorch.save(p, 'ck/last.pt')\n")


def foreign_zip(tmp: Path, env: Env) -> None:
    (tmp / "ck").mkdir(exist_ok=True)
    with zipfile.ZipFile(tmp / CK, "w") as z:
        z.writestr("readme.txt", "not a torch file\n")
        z.writestr("data/0", b"\0" * 64)


# --- checks ----------------------------------------------------------------------------------

def absent(*names: str, why: str = "") -> Check:
    def check(r: Ran) -> str | None:
        there = [n for n in names if os.path.lexists(r.tmp / n)]
        return f"wrong: {', '.join(there)} exists{why}" if there else None
    return check


def magic(name: str, *prefixes: bytes, within: int = 0) -> Check:
    """``name`` exists and starts with (or, with ``within``, holds early) one of ``prefixes``."""
    def check(r: Ran) -> str | None:
        try:
            head = (r.tmp / name).read_bytes()[:max(within, 16)]
        except OSError as exc:
            return f"loss: {name} not readable ({exc.strerror})"
        ok = any((p in head) if within else head.startswith(p) for p in prefixes)
        return None if ok else f"wrong: {name} is not the expected format (starts {head[:12]!r})"
    return check


def char_device(path: str) -> Check:
    """A device file a run wrote to must still be that device (root could replace it)."""
    def check(r: Ran) -> str | None:
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            return f"loss: {path} is gone ({exc.strerror})"
        return None if stat.S_ISCHR(mode) else f"loss: {path} is no longer a character device"
    return check


def still_link(name: str) -> Check:
    def check(r: Ran) -> str | None:
        return None if (r.tmp / name).is_symlink() else \
            f"wrong: the symlink {name} was replaced by a regular file"
    return check


def no_epoch_ran(r: Ran) -> str | None:
    """A bad output path must be found before any work (docs/softmax.md, Errors)."""
    return "wrong: an epoch ran before the output path was refused" \
        if "epoch 1/" in r.out else None


def listing_clean(name: str = "listing.txt") -> Check:
    """The listing (``ls -a`` of a tmpfs, saved before the namespace ended) shows no .tmp."""
    def check(r: Ran) -> str | None:
        try:
            names = (r.tmp / name).read_text(errors="replace").split()
        except OSError:
            return f"wrong: {name} was not saved (the mount failed?)"
        left = [n for n in names if ".tmp" in n]
        return f"loss: temporaries left behind: {', '.join(left[:4])}" if left else None
    return check


def file_says(name: str, *words: str) -> Check:
    """A file the script saved (e.g. a verification's output) holds every word."""
    def check(r: Ran) -> str | None:
        try:
            text = (r.tmp / name).read_text(errors="replace")
        except OSError:
            return f"loss: {name} missing (nothing survived)"
        missing = [w for w in words if w not in text]
        return f"loss: {name} does not hold {missing} (holds {text.strip()[:120]!r})" \
            if missing else None
    return check


def not_created_silently(folder: str) -> Check:
    """A missing parent of an output file: refused (not created), or created and said so."""
    def check(r: Ran) -> str | None:
        if not (r.tmp / folder).exists():
            return None
        if "creat" in r.text.lower():
            return None
        return (f"wrong: the missing folder {folder}/ was created silently "
                f"(exit {r.rc}; nothing says it was created)")
    return check


def measured(max_kb: int, max_s: float, name: str = "time.txt", cpu: bool = False) -> Check:
    """``/usr/bin/time -f '%M %e %U %S'``: max RSS (kB) and seconds within bounds. With
    ``cpu`` the bound is on user+system CPU seconds (the machine is shared with other
    sessions: wall time then gets 3x the bound), else on wall seconds."""
    def check(r: Ran) -> str | None:
        try:
            last = (r.tmp / name).read_text().strip().splitlines()[-1].split()
            kb, wall = int(last[0]), float(last[1])
            used = float(last[2]) + float(last[3])
        except (OSError, IndexError, ValueError):
            return f"wrong: no measurement in {name}"
        problems = []
        if kb > max_kb:
            problems.append(f"max RSS {kb / 1024:.0f} MB > {max_kb / 1024:.0f} MB")
        if cpu and used > max_s:
            problems.append(f"{used:.2f} s of CPU > {max_s:g} s")
        if wall > (3 * max_s if cpu else max_s):
            problems.append(f"{wall:.2f} s wall > {3 * max_s if cpu else max_s:g} s")
        return f"wrong: {'; '.join(problems)}" if problems else None
    return check


def explain_json(match: str | None, size: int, *, truncated: bool = False,
                 exact: bool = True) -> Check:
    """The JSON names ``match`` first and claims no more characters than the input holds
    (``exact``: all of them, for ASCII input)."""
    def check(r: Ran) -> str | None:
        try:
            doc = json.loads(r.out)
        except ValueError:
            return "wrong: stdout is not one JSON document"
        ids = [m.get("id") for m in doc.get("matches", [])]
        read = doc.get("chars_read")
        if match is not None and (not ids or ids[0] != match):
            return f"wrong: expected {match} first, got {ids[:3]}"
        if not isinstance(read, int) or read > size:
            return f"wrong: chars_read {read} > the {size} bytes given"
        if exact and read != size:
            return f"wrong: chars_read {read}, the input holds {size}"
        if bool(doc.get("truncated")) != truncated:
            return f"wrong: truncated is {doc.get('truncated')}, expected {truncated}"
        return None
    return check


def cleanup(*names: str) -> Check:
    """Remove big inputs after the case (never fails)."""
    def check(r: Ran) -> str | None:
        for n in names:
            try:
                (r.tmp / n).unlink()
            except OSError:
                pass
        return None
    return check


def pages(prefix: str, suffix: str, count: int) -> Check:
    def check(r: Ran) -> str | None:
        folder = r.tmp / Path(prefix).parent
        stem = Path(prefix).name
        found = sorted(p.name for p in folder.glob(f"{stem}-*{suffix}"))
        width = len(str(count))  # docs: predictions-01.png ... for 10+ pages
        want = [f"{stem}-{i:0{width}d}{suffix}" for i in range(1, count + 1)]
        if found != want:
            return f"wrong: pages {found[:2]}..{found[-2:]} ({len(found)}), expected {count}"
        return None
    return check


def json_file(name: str, key: str) -> Check:
    def check(r: Ran) -> str | None:
        try:
            doc = json.loads((r.tmp / name).read_text())
        except (OSError, ValueError) as exc:
            return f"loss: {name} is not readable JSON ({exc})"
        return None if key in doc else f"wrong: {name} has no {key!r}"
    return check


# --- the cases -------------------------------------------------------------------------------

def case(id: str, script: str, exit: str = "!0", *, check: Check | None = None,
         setup_: Setup | None = None, timeout: float = 180.0, note: str = "",
         exclusive: bool = False) -> Case:
    return Case(id=id, group=G, script=script.strip(), exit=exit, timeout=timeout,
                setup=setup_, check=check, note=note, exclusive=exclusive)


def ro_mount(inner: str, where: str = "ro") -> str:
    """Run ``inner`` with ``{tmp}/<where>`` a read-only tmpfs (private mount namespace)."""
    return (f"mkdir -p {{tmp}}/{where}\n"
            f"exec unshare -m bash -c 'mount -t tmpfs -o ro none {{tmp}}/{where} || exit 99\n"
            f"exec {inner}'")


def full_mount(inner: str, size: str, where: str = "full", save: str = "") -> str:
    """Run ``inner`` with ``{tmp}/<where>`` a tiny tmpfs; then list it (and run ``save``)."""
    return (f"mkdir -p {{tmp}}/{where}\n"
            f"unshare -m bash -c 'mount -t tmpfs -o size={size} none {{tmp}}/{where} || exit 99\n"
            f"{inner}\nrc=$?\nls -a {{tmp}}/{where} > {{tmp}}/listing.txt\n{save}\nexit $rc'")


VERIFY_EPOCH = ("{py} -c \"import torch; print('epoch', torch.load('{tmp}/survivor.pt', "
                "weights_only=True)['epoch'])\" > {tmp}/verify.txt 2>&1")

CASES: list[Case] = [
    # ---- softmax train: output paths ------------------------------------------------------
    case("file.train.plot-txt", TRAIN + " --checkpoint-dir {tmp}/ck --plot {tmp}/curves.txt",
         "2", check=all_of(one_line_error, error_names("curves.txt", ".png"), no_epoch_ran,
                           absent("ck/last.pt")),
         note="--plot with a suffix matplotlib cannot write: refused before any work"),
    case("file.train.plot-nosuffix", TRAIN + " --checkpoint-dir {tmp}/ck --plot {tmp}/curves",
         "2", check=all_of(one_line_error, error_names("curves", "suffix"), no_epoch_ran),
         note="--plot without a suffix"),
    case("file.train.plot-pt", TRAIN + " --checkpoint-dir {tmp}/ck --plot {tmp}/other/last.pt",
         "2", check=all_of(one_line_error, error_names("last.pt", "'pt'"), no_epoch_ran),
         note="--plot named like a checkpoint"),
    case("file.train.plot-PNG-upper", TRAIN + " --checkpoint-dir {tmp}/ck --plot {tmp}/Curves.PNG",
         "0", check=all_of(magic("Curves.PNG", b"\x89PNG"), no_temporaries),
         note="upper-case suffix: a PNG under that exact name"),
    case("file.train.plot-svg", TRAIN + " --epochs 2 --checkpoint-dir {tmp}/ck --plot {tmp}/c.svg",
         "0", check=all_of(magic("c.svg", b"<svg", within=600), no_temporaries),
         note="--plot .svg is written as SVG, each epoch"),
    case("file.train.metrics-dir", TRAIN + " --checkpoint-dir {tmp}/ck --metrics-json {tmp}/adir",
         "2", check=all_of(one_line_error, error_names("adir"), no_epoch_ran),
         setup_=setup(mkdirs("adir")), note="--metrics-json names a directory"),
    case("file.train.metrics-missing-parent",
         TRAIN + " --checkpoint-dir {tmp}/ck --metrics-json {tmp}/nope/deeper/m.json",
         "any", check=not_created_silently("nope"),
         note="a typo'd parent of --metrics-json must not be created silently"),
    case("file.train.plot-missing-parent",
         TRAIN + " --checkpoint-dir {tmp}/ck --plot {tmp}/nope/c.png",
         "any", check=not_created_silently("nope"),
         note="a typo'd parent of --plot must not be created silently"),
    case("file.train.metrics-devfull",
         TRAIN + " --checkpoint-dir {tmp}/ck --metrics-json /dev/full", "1",
         check=all_of(error_names("/dev/full", "full"), exists("ck/last.pt", link_ok=True),
                      char_device("/dev/full")),
         note="--metrics-json /dev/full: the error names it; the epoch's checkpoint stays"),
    case("file.train.plot-devfull-link",
         TRAIN + " --checkpoint-dir {tmp}/ck --plot {tmp}/full.png", "1",
         check=all_of(error_names("full.png", "full"), still_link("full.png"),
                      char_device("/dev/full"), exists("ck/last.pt", link_ok=True)),
         setup_=setup(symlink("full.png", "/dev/full")),
         note="--plot a symlink to /dev/full"),
    case("file.train.metrics-proc",
         TRAIN + " --checkpoint-dir {tmp}/ck --metrics-json /proc/self/x.json", "1",
         check=all_of(error_names("/proc/self/x.json"), no_epoch_ran, absent("ck/last.pt")),
         note="--metrics-json under /proc: refused before any work"),
    case("file.train.metrics-devnull",
         TRAIN + " --epochs 2 --checkpoint-dir {tmp}/ck --metrics-json /dev/null", "0",
         check=all_of(char_device("/dev/null"), exists("ck/last.pt", link_ok=True)),
         note="--metrics-json /dev/null works and /dev/null stays a device (we are root)"),
    case("file.train.ckdir-devnull", TRAIN + " --checkpoint-dir /dev/null", "1,2",
         check=all_of(one_line_error, error_names("/dev/null"), char_device("/dev/null")),
         note="--checkpoint-dir names a device file"),
    case("file.train.metrics-symlink",
         TRAIN + " --checkpoint-dir {tmp}/ck --metrics-json {tmp}/m.json", "0",
         check=all_of(still_link("m.json"), json_file("elsewhere/real.json", "epochs")),
         setup_=setup(write("elsewhere/real.json", "{}\n"),
                      symlink("m.json", "elsewhere/real.json")),
         note="--metrics-json is a symlink: the file it points to gets the metrics"),
    case("file.train.metrics-symlink-to-checkpoint",
         TRAIN + " --checkpoint-dir {tmp}/ck --metrics-json {tmp}/m.json", "2",
         check=all_of(one_line_error, error_names("m.json", "checkpoint"), unchanged(CK)),
         setup_=setup(copy_base(CK), symlink("m.json", CK), base=True, remember=(CK,)),
         note="--metrics-json a symlink to the checkpoint: refused, checkpoint intact"),
    case("file.train.ckdir-ro", ro_mount(TRAIN + " --checkpoint-dir {tmp}/ro/ck"), "1",
         check=all_of(error_names("ro/ck", "read-only"), no_epoch_ran),
         note="--checkpoint-dir on a read-only mount: refused before any work"),
    case("file.train.metrics-ro",
         ro_mount(TRAIN + " --checkpoint-dir {tmp}/ck --metrics-json {tmp}/ro/m.json"), "1",
         check=all_of(error_names("ro/m.json", "read-only"), no_epoch_ran),
         note="--metrics-json on a read-only mount"),
    case("file.train.ckdir-full",
         full_mount(TRAIN + " --epochs 3 --checkpoint-dir {tmp}/full --plot {tmp}/c.png",
                    "64k", save="cp {tmp}/full/last.pt {tmp}/survivor.pt 2>/dev/null\n"
                    + VERIFY_EPOCH.replace("'", "'\\''")), "1",
         check=all_of(error_names("full/last.pt", "full"), listing_clean(),
                      file_says("verify.txt", "epoch 1")),
         note="full disk at epoch 2: names last.pt, no .tmp, epoch 1's checkpoint survives"),
    case("file.train.metrics-full",
         full_mount(TRAIN + " --epochs 3 --checkpoint-dir {tmp}/ck --metrics-json "
                    "{tmp}/full/m.json", "4k",
                    save="cp {tmp}/full/m.json {tmp}/m-survivor.json 2>/dev/null"), "1",
         check=all_of(error_names("full/m.json", "full"), listing_clean(),
                      json_file("m-survivor.json", "epochs"), exists("ck/last.pt", link_ok=True)),
         note="full disk while rewriting --metrics-json: the previous file survives"),
    case("file.train.plot-full",
         full_mount(TRAIN + " --epochs 3 --checkpoint-dir {tmp}/ck --plot {tmp}/full/c.png",
                    "20k", save="cp {tmp}/full/c.png {tmp}/c-survivor.png 2>/dev/null"), "1",
         check=all_of(error_names("full/c.png", "full"), listing_clean(),
                      magic("c-survivor.png", b"\x89PNG")),
         note="full disk while redrawing --plot: the previous PNG survives"),
    case("file.train.ulimit-30",
         "ulimit -f 30\nexec " + TRAIN + " --checkpoint-dir {tmp}/ck --plot {tmp}/c.png", "1",
         check=all_of(error_names("ck/last.pt", "ulimit"), no_temporaries),
         note="ulimit -f 30 (KiB): the 39 kB checkpoint cannot be written; no .tmp left"),
    case("file.train.ulimit-50",
         "ulimit -f 50\n" + TRAIN + " --epochs 3 --checkpoint-dir {tmp}/ck --plot {tmp}/c.png "
         "--metrics-json {tmp}/m.json\nrc=$?\ncp {tmp}/ck/last.pt {tmp}/survivor.pt\n"
         + VERIFY_EPOCH + "\nexit $rc", "0",
         check=all_of(file_says("verify.txt", "epoch 3"), no_temporaries),
         note="ulimit -f 50 (KiB): every output fits; 3 epochs checkpointed"),
    case("file.train.names-unicode",
         TRAIN + " --checkpoint-dir '{tmp}/my runs/ünï 🚀' --plot '{tmp}/cür ves.png' "
         "--metrics-json '{tmp}/m é t.json'", "0",
         check=all_of(exists("my runs/ünï 🚀/last.pt", "cür ves.png", "m é t.json", link_ok=True),
                      no_temporaries),
         note="spaces and non-ASCII in every output name"),
    case("file.train.names-newline",
         TRAIN + " --checkpoint-dir {tmp}/$'c\\nk' --plot {tmp}/$'cur\\nves.png' "
         "--metrics-json {tmp}/$'m\\n.json'", "0",
         check=all_of(exists("c\nk/last.pt", "cur\nves.png", "m\n.json", link_ok=True),
                      no_temporaries),
         note="a newline in every output name"),
    case("file.train.unpack-ulimit",
         "export SOFTMAX_OFFLINE=1\nulimit -f 20000\nexec {sm} train --device cpu --epochs 1 "
         "--data-root {tmp}/d --checkpoint-dir {tmp}/ck", "1",
         check=all_of(error_names("-ubyte", "ulimit"), no_temporaries),
         setup_=setup(mkdirs("d")),
         note="unpacking Debian's archives under ulimit -f 20 MB: names the file, no .tmp"),
    case("file.train.unpack-full",
         "export SOFTMAX_OFFLINE=1\n" + full_mount(
             "{sm} train --device cpu --epochs 1 --data-root {tmp}/full --checkpoint-dir "
             "{tmp}/ck", "20m", save="ls -aR {tmp}/full > {tmp}/listing.txt"), "1",
         check=all_of(error_names("idx3-ubyte", "full"), listing_clean()),
         note="unpacking the data onto a 20 MB disk: names the file, no .tmp"),

    # ---- softmax train --resume: checkpoints -------------------------------------------------
    case("file.resume.garbage", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck", "1",
         check=all_of(one_line_error, error_names(CK), unchanged(CK),
                      not_in_output("weights_only=False", kind="message")),
         setup_=setup(write(CK, GARBAGE), remember=(CK,)),
         note="4 kB of random bytes as last.pt: one line, file kept"),
    case("file.resume.empty", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck", "1",
         check=all_of(one_line_error, error_names(CK), unchanged(CK)),
         setup_=setup(write(CK, b""), remember=(CK,)), note="an empty last.pt"),
    case("file.resume.foreign-zip", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck",
         "1", check=all_of(one_line_error, error_names(CK), unchanged(CK)),
         setup_=setup(foreign_zip, remember=(CK,)), note="a zip that is not torch's"),
    case("file.resume.plain-dict", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck",
         "1", check=all_of(one_line_error, error_names(CK, "epoch", "model"), unchanged(CK)),
         setup_=setup("import torch; torch.save({'lr': 0.1, 'weights': torch.zeros(3)}, "
                      "'ck/last.pt')", remember=(CK,)),
         note="a torch file of a plain dict without our keys"),
    case("file.resume.epoch-two", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck",
         "1", check=all_of(one_line_error, error_names(CK, "'two'"), unchanged(CK)),
         setup_=setup(forge("p['epoch'] = 'two'"), base=True, remember=(CK,)),
         note="epoch='two'"),
    case("file.resume.epoch-neg", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck",
         "1", check=all_of(one_line_error, error_names(CK, "-5"), unchanged(CK),
                           not_in_output("epoch -4", kind="message")),
         setup_=setup(forge("p['epoch'] = -5"), base=True, remember=(CK,)),
         note="epoch=-5"),
    case("file.resume.epoch-999", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck",
         "any", check=all_of(error_names(CK, "999"), unchanged(CK),
                             not_in_output("after 2 epochs")),
         setup_=setup(forge("p['epoch'] = 999"), base=True, remember=(CK,)),
         note="epoch 999 (beyond --epochs 3; its history holds 2): no contradictory report"),
    case("file.resume.no-generator", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck",
         "1", check=all_of(one_line_error, error_names(CK, "generator"), unchanged(CK)),
         setup_=setup(forge("del p['generator']"), base=True, remember=(CK,)),
         note="no 'generator' key"),
    case("file.resume.other-shape", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck",
         "1", check=all_of(one_line_error, error_names(CK, "784"), unchanged(CK)),
         setup_=setup(forge("p['state'] = {k: v[..., :5].clone() if v.dim() == 2 else v "
                            "for k, v in p['state'].items()}"), base=True, remember=(CK,)),
         note="a model of a different shape (10x5)"),
    case("file.resume.hostile", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck", "1",
         check=all_of(one_line_error, absent("pwned", why=": the pickle's code ran"),
                      error_names(CK, "unsafe"),
                      not_in_output("weights_only=False", "likely succeed", kind="message"),
                      unchanged(CK)),
         setup_=setup(HOSTILE_ZIP, remember=(CK,)),
         note="a torch.save file whose pickle calls os.system('touch pwned')"),
    case("file.resume.dataloader-to-tensor",
         TRAIN + " --epochs 2 --resume --checkpoint-dir {tmp}/ck", "0",
         check=all_of(error_names("dataloader", "new order"), exists(CK, link_ok=True)),
         setup_=setup(lambda tmp, env: subprocess.run(
             [env.py, "-m", "softmax", "train", "--loader", "dataloader", "--workers", "0",
              "--epochs", "1", "--device", "cpu", "--data-root", env.data,
              "--checkpoint-dir", str(tmp / "ck"), "--plot", str(tmp / "c0.png")],
             cwd=tmp, capture_output=True, timeout=900, check=True)),
         timeout=300, note="a --loader dataloader checkpoint resumed with the tensor loader"),
    case("file.resume.nothing-to-do",
         TRAIN + " --resume --checkpoint-dir {tmp}/ck", "0",
         check=all_of(error_names("nothing", CK, "--epochs 3"), unchanged(CK),
                      not_in_output("checkpoint None")),
         setup_=setup(copy_base(CK), base=True, remember=(CK,)),
         note="--resume --epochs 1 after 2 epochs: nothing to do, naming the checkpoint"),
    case("file.resume.fifo", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck", "1",
         check=error_names(CK), setup_=setup(fifo(CK)), timeout=60,
         note="last.pt is a FIFO nobody writes: an error, not a wait forever"),
    case("file.resume.directory", TRAIN + " --epochs 3 --resume --checkpoint-dir {tmp}/ck",
         "1", check=all_of(one_line_error, error_names(CK)), setup_=setup(mkdirs(CK)),
         note="last.pt is a directory"),

    # ---- softmax predict --checkpoint ----------------------------------------------------------
    case("file.predict.ckpt-garbage", PREDICT + " --checkpoint {tmp}/ck/last.pt --out {tmp}/p.png",
         "1", check=all_of(one_line_error, error_names(CK), absent("p.png"),
                           not_in_output("weights_only=False", kind="message")),
         setup_=setup(write(CK, GARBAGE)), note="random bytes as --checkpoint"),
    case("file.predict.ckpt-hostile-raw",
         PREDICT + " --checkpoint {tmp}/ck/last.pt --out {tmp}/p.png", "1",
         check=all_of(one_line_error, absent("pwned", why=": the pickle's code ran"),
                      error_names(CK),
                      not_in_output("weights_only=False", "likely succeed", kind="message")),
         setup_=setup(HOSTILE_RAW), note="a plain pickle (not zip) calling os.system"),
    case("file.predict.ckpt-fifo", PREDICT + " --checkpoint {tmp}/ck/last.pt --out {tmp}/p.png",
         "1", check=all_of(error_names(CK), not_in_output("does not exist")),
         setup_=setup(fifo(CK)), timeout=60,
         note="--checkpoint a FIFO: no hang, and not called missing"),
    case("file.predict.ckpt-devnull", PREDICT + " --checkpoint /dev/null --out {tmp}/p.png",
         "1", check=all_of(one_line_error, error_names("/dev/null"),
                           not_in_output("does not exist")),
         note="--checkpoint /dev/null (exists, empty, not a regular file)"),
    case("file.predict.ckpt-other-shape",
         PREDICT + " --checkpoint {tmp}/ck/last.pt --out {tmp}/p.png", "1",
         check=all_of(one_line_error, error_names(CK, "784")),
         setup_=setup(forge("p['state'] = {k: v[..., :5].clone() if v.dim() == 2 else v "
                            "for k, v in p['state'].items()}"), base=True),
         note="--checkpoint of a different shape"),

    # ---- softmax predict --out --------------------------------------------------------------
    case("file.predict.out-txt", PREDICT + " --checkpoint {tmp}/base.pt --out {tmp}/p.txt", "2",
         check=all_of(one_line_error, error_names("p.txt", ".png"),
                      not_in_output("using Fashion-MNIST")),
         setup_=setup(base=True), note="--out p.txt: refused before reading anything"),
    case("file.predict.out-pdf-pages",
         PREDICT + " --checkpoint {tmp}/base.pt -n 200 --out {tmp}/P.PDF", "0",
         check=all_of(pages("P", ".PDF", 2), magic("P-1.PDF", b"%PDF"), no_temporaries,
                      error_names("P-1.PDF", "P-2.PDF")),
         setup_=setup(base=True), note="-n 200 as upper-case .PDF: two PDF pages"),
    case("file.predict.out-dir", PREDICT + " --checkpoint {tmp}/base.pt --out {tmp}/adir", "2",
         check=all_of(one_line_error, error_names("adir")),
         setup_=setup(mkdirs("adir"), base=True), note="--out names a directory"),
    case("file.predict.out-missing-parent",
         PREDICT + " --checkpoint {tmp}/base.pt --out {tmp}/nope/p.png", "any",
         check=not_created_silently("nope"), setup_=setup(base=True),
         note="a typo'd parent of --out must not be created silently"),
    case("file.predict.out-devfull-link",
         PREDICT + " --checkpoint {tmp}/base.pt --out {tmp}/full.png", "1",
         check=all_of(error_names("full.png", "full"), still_link("full.png"),
                      char_device("/dev/full")),
         setup_=setup(symlink("full.png", "/dev/full"), base=True),
         note="--out a symlink to /dev/full"),
    case("file.predict.out-ro",
         ro_mount(PREDICT + " --checkpoint {tmp}/base.pt --out {tmp}/ro/p.png"), "1",
         check=error_names("ro/p.png", "read-only"), setup_=setup(base=True),
         note="--out on a read-only mount"),
    case("file.predict.out-full",
         full_mount(PREDICT + " --checkpoint {tmp}/base.pt -n 400 --out {tmp}/full/p.png",
                    "200k"), "1",
         check=all_of(error_names("full/p-1.png", "full"), listing_clean()),
         setup_=setup(base=True), note="pages onto a full disk: names the page, no .tmp"),
    case("file.predict.out-ulimit",
         "ulimit -f 50\nexec " + PREDICT + " --checkpoint {tmp}/base.pt -n 128 --out {tmp}/p.png",
         "1", check=all_of(error_names("p.png", "ulimit"), no_temporaries),
         setup_=setup(base=True), note="a 128-image page under ulimit -f 50 (KiB)"),
    case("file.predict.out-names",
         PREDICT + " --checkpoint {tmp}/base.pt -n 130 --out {tmp}/$'pré dic\\ntions.png'", "0",
         check=all_of(exists("pré dic\ntions-1.png", "pré dic\ntions-2.png", link_ok=True),
                      no_temporaries),
         setup_=setup(base=True), note="--out with a space, non-ASCII and a newline, 2 pages"),

    # ---- devcheck run --out ----------------------------------------------------------------
    case("file.run.out-file", "{dc} run --no-plot --out {tmp}/afile -- touch {tmp}/ran", "!0",
         check=all_of(error_names("afile"), unchanged("afile"), absent("ran", why=
                      ": the job started although --out was refused")),
         setup_=setup(write("afile", "keep me\n"), remember=("afile",)),
         note="--out names an existing file: refused before the job, file kept"),
    case("file.run.out-ro", ro_mount("{dc} run --no-plot --out {tmp}/ro/o -- touch {tmp}/ran"),
         "1", check=all_of(error_names("ro/o", "read-only"),
                           absent("ran", why=": the job started although --out was refused")),
         note="--out on a read-only mount: exit 1 before the job starts"),
    case("file.run.out-proc", "{dc} run --no-plot --out /proc/self/o -- touch {tmp}/ran", "1",
         check=all_of(error_names("/proc/self/o"),
                      absent("ran", why=": the job started although --out was refused")),
         note="--out under /proc"),
    case("file.run.out-full",
         full_mount("{dc} run -i 0.01 --out {tmp}/full -- sleep 3", "16k"), "0",
         check=all_of(error_names("timeline", "full"), listing_clean()),
         note="a 16 kB disk for --out at 100 Hz: the job's exit code, a warning, no .tmp"),
    case("file.run.out-ulimit",
         "ulimit -f 8\nexec {dc} run -i 0.01 --out {tmp}/o -- sleep 3", "0",
         check=all_of(error_names("timeline", "ulimit"), no_temporaries),
         note="ulimit -f 8 (KiB) for devcheck run's outputs"),
    case("file.run.out-names",
         "{dc} run --out {tmp}/$'run ü\\nx' -- {py} -c pass", "0",
         check=all_of(exists("run ü\nx/summary.json", "run ü\nx/timeline.jsonl",
                             "run ü\nx/timeline.png", link_ok=True), no_temporaries),
         note="--out with a space, non-ASCII and a newline"),
    case("file.run.out-missing-parent",
         "{dc} run --no-plot --out {tmp}/new/deeper -- {py} -c pass", "0",
         check=all_of(exists("new/deeper/summary.json", link_ok=True), error_names("new/deeper")),
         note="--out in a missing folder: created (documented) and named in the summary"),
    case("file.run.out-symlink",
         "{dc} run --no-plot --out {tmp}/link -- {py} -c pass", "0",
         check=all_of(still_link("link"),
                      exists("real/summary.json", "real/timeline.jsonl", link_ok=True)),
         setup_=setup(mkdirs("real"), symlink("link", "real")),
         note="--out a symlink to a folder elsewhere"),

    # ---- pytest --devcheck-json ------------------------------------------------------------
    case("file.pytest.json-dir", PYTEST + " --devcheck-json {tmp}/adir", "0",
         check=error_names("adir", "directory"), setup_=setup(pytest_files, mkdirs("adir")),
         timeout=240, note="--devcheck-json a directory: one line, the tests' own exit"),
    case("file.pytest.json-missing-parent", PYTEST + " --devcheck-json {tmp}/nope/r.json", "0",
         check=all_of(error_names("nope/r.json"), absent("nope", why=": created silently")),
         setup_=setup(pytest_files), timeout=240,
         note="--devcheck-json in a missing folder: not created"),
    case("file.pytest.json-devfull", PYTEST + " --devcheck-json /dev/full", "0",
         check=all_of(error_names("/dev/full", "full"), char_device("/dev/full")),
         setup_=setup(pytest_files), timeout=240, note="--devcheck-json /dev/full"),
    case("file.pytest.json-proc", PYTEST + " --devcheck-json /proc/self/r.json", "0",
         check=error_names("/proc/self/r.json"), setup_=setup(pytest_files), timeout=240,
         note="--devcheck-json under /proc"),
    case("file.pytest.json-devnull", PYTEST + " --devcheck-json /dev/null", "0",
         check=all_of(char_device("/dev/null"), not_in_output("cannot write")),
         setup_=setup(pytest_files), timeout=240, note="--devcheck-json /dev/null: fine"),
    case("file.pytest.json-ro", ro_mount(PYTEST + " --devcheck-json {tmp}/ro/r.json"), "0",
         check=all_of(error_names("ro/r.json"), names_any("read-only", "not writable")),
         setup_=setup(pytest_files), timeout=240,
         note="--devcheck-json on a read-only mount"),
    case("file.pytest.json-full",
         full_mount(PYTEST + " --devcheck-json {tmp}/full/r.json", "4k"), "0",
         check=all_of(error_names("full/r.json", "full"), listing_clean()),
         setup_=setup(pytest_files), timeout=240,
         note="--devcheck-json on a 4 kB disk: names it, no .tmp"),
    case("file.pytest.json-symlink", PYTEST + " --devcheck-json {tmp}/r.json", "0",
         check=all_of(still_link("r.json"), json_file("elsewhere/real.json", "availability")),
         setup_=setup(pytest_files, write("elsewhere/real.json", "{}\n"),
                      symlink("r.json", "elsewhere/real.json")),
         timeout=240, note="--devcheck-json a symlink: the file it points to gets the report"),
    case("file.pytest.json-names", PYTEST + " --devcheck-json {tmp}/$'ré port\\n.json'", "0",
         check=all_of(json_file("ré port\n.json", "availability"), no_temporaries),
         setup_=setup(pytest_files), timeout=240,
         note="--devcheck-json with a space, non-ASCII and a newline"),

    # ---- lint ------------------------------------------------------------------------------
    case("file.lint.fix-ro",
         "exec unshare -m bash -c 'mount --bind {tmp}/src {tmp}/src && "
         "mount -o remount,bind,ro {tmp}/src || exit 99\nexec {dc} lint --fix {tmp}/src'", "2",
         check=all_of(error_names("src/a.py", "read-only"), unchanged("src/a.py")),
         setup_=setup(write("src/a.py", "import torch\nm = torch.load('x.pt')\n"),
                      remember=("src/a.py",)),
         note="lint --fix on a read-only mount: names the file, exit 2, file intact"),
    case("file.lint.fix-symlink", "{dc} lint --fix {tmp}/link.py", "0",
         check=all_of(still_link("link.py"), file_says("real/a.py", "weights_only=True")),
         setup_=setup(write("real/a.py", "import torch\nm = torch.load('x.pt')\n"),
                      symlink("link.py", "real/a.py")),
         note="lint --fix on a symlinked file: the real file is fixed, the link stays"),
    case("file.lint.symlink-loop", "{dc} lint {tmp}/tree", "1",
         check=error_names("tree/a.py", "of 1 file"),
         setup_=setup(write("tree/a.py", "import torch\nm = torch.load('x.pt')\n"),
                      symlink("tree/self.py", "tree/self.py"), symlink("tree/up", "tree"),
                      symlink("tree/sub/loop", "tree/sub")),
         timeout=60, note="symlink loops (file and folders) in a linted tree"),
    case("file.lint.fifo-in-folder", "{dc} lint {tmp}/tree", "0",
         setup_=setup(write("tree/a.py", "x = 1\n"), fifo("tree/pipe.py")), timeout=60,
         note="a FIFO named *.py inside a linted folder: skipped, no hang"),
    case("file.lint.fifo-named", "{dc} lint {tmp}/pipe.py", "any",
         check=all_of(error_names("pipe.py"), not_in_output("in 0 files")),
         setup_=setup(fifo("pipe.py")), timeout=60,
         note="a FIFO named on the command line: said, not silently 0 files"),
    case("file.lint.process-substitution",
         "exec {dc} lint <(printf 'import torch\\nm = torch.load(\"x.pt\")\\n')", "1,2",
         check=not_in_output("in 0 files"), timeout=60,
         note="lint <(git show ...): a pipe named on the command line is linted or refused"),
    case("file.explain.process-substitution",
         "exec {dc} explain <(cat {tmp}/ci.log) --json", "0",
         check=explain_json("cuda_out_of_memory", 200_000),
         setup_=setup(lambda tmp, env: _log(tmp / "ci.log", 200_000, 100_000)),
         note="explain <(cat log): a pipe as the file argument"),
    case("file.lint.non-utf8", "{dc} lint {tmp}/tree", "2",
         check=all_of(error_names("latin.py", "decode"), error_names("b.py")),
         setup_=setup(write("tree/latin.py", b"# caf\xe9\nimport torch\n"),
                      write("tree/b.py", "import torch\nm = torch.load('x.pt')\n")),
         note="a non-UTF-8 .py without a coding line: reported, the others still checked"),
    case("file.lint.20mb",
         TIME + "{dc} lint {tmp}/big.py", "2",
         check=all_of(error_names("big.py", "over the 10.0 MB"), measured(512 * 1024, 30),
                      cleanup("big.py")),
         setup_=setup(lambda tmp, env: _big_py(tmp / "big.py")), timeout=300, exclusive=True,
         note="a 20 MB generated .py: reported as not linted, with its size, in bounded "
              "time and memory (parsing it took 3.2 GB)"),

    # ---- devcheck explain on long input (timing) -------------------------------------------
    case("file.explain.6mb-error-2mb",
         TIME + "{dc} explain {tmp}/ci.log --json", "0",
         check=all_of(explain_json("cuda_out_of_memory", 6_000_000),
                      measured(64 * 1024, 1.0, cpu=True), cleanup("ci.log")),
         setup_=setup(lambda tmp, env: _log(tmp / "ci.log", 6_000_000, 2_000_000)),
         exclusive=True, note="6 MB CI log, CUDA OOM 2 MB in: matched, <= 1 s, <= 64 MB"),
    case("file.explain.6mb-error-3mb",
         TIME + "{dc} explain {tmp}/ci.log --json", "0",
         check=all_of(explain_json("illegal_memory_access", 6_000_000),
                      measured(64 * 1024, 1.0, cpu=True), cleanup("ci.log")),
         setup_=setup(lambda tmp, env: _log(tmp / "ci.log", 6_000_000, 3_000_000,
                                            ILLEGAL)),
         exclusive=True, note="6 MB log, illegal memory access 3 MB in"),
    case("file.explain.50mb-no-newline",
         TIME + "{dc} explain - --json < {tmp}/one.log",
         "0", check=all_of(explain_json("illegal_memory_access", 50_000_000),
                           measured(64 * 1024, 10.0, cpu=True), cleanup("one.log")),
         setup_=setup(lambda tmp, env: _one_line(tmp / "one.log", 50_000_000)),
         exclusive=True, note="50 MB on stdin, no newline, the error in the middle"),
    case("file.explain.nul-invalid-utf8",
         TIME + "{dc} explain {tmp}/junk.log --json",
         "0", check=all_of(explain_json("cuda_out_of_memory", 4_000_000, exact=False),
                           measured(64 * 1024, 2.0, cpu=True), cleanup("junk.log")),
         setup_=setup(lambda tmp, env: _junk(tmp / "junk.log", 4_000_000)),
         exclusive=True, note="4 MB of NULs and invalid UTF-8 around an OOM error"),
    case("file.explain.endless",
         "head -c 300M /dev/zero | /usr/bin/time -f '%M %e %U %S' -o {tmp}/time.txt "
         "{dc} explain - --json", "1",
         check=all_of(explain_json(None, 268_435_456, truncated=True),
                      measured(64 * 1024, 30.0, cpu=True)),
         exclusive=True, timeout=120,
         note="300 MB of NULs on stdin: cut at 256 Mi characters and said so"),

    # ---- softmax predict -n large (timing) -------------------------------------------------
    case("file.predict.n10000",
         TIME + PREDICT +
         " --checkpoint {tmp}/base.pt -n 10000 --out {tmp}/pages/p.png", "0",
         check=all_of(pages("pages/p", ".png", 79), measured(1024 * 1024, 30.0, cpu=True),
                      error_names("p-01.png", "p-79.png")),
         setup_=setup(mkdirs("pages"), base=True), exclusive=True, timeout=120,
         note="-n 10000: 79 pages, <= 30 s of CPU (wall <= 90 s: shared machine), <= 1 GB"),
    case("file.predict.n3000",
         TIME + PREDICT +
         " --checkpoint {tmp}/base.pt -n 3000 --out {tmp}/pages/p.png", "0",
         check=all_of(pages("pages/p", ".png", 24), measured(1024 * 1024, 30.0, cpu=True)),
         setup_=setup(mkdirs("pages"), base=True), exclusive=True, timeout=120,
         note="-n 3000: 24 pages (it ran 7 minutes before the fix)"),
]


# --- generated inputs ------------------------------------------------------------------------

LINE = "2024-05-01T12:00:00Z step 1234 loss 0.1234 lr 0.001 an ordinary CI log line, all fine\n"
OOM = ("Traceback (most recent call last):\n  File \"train.py\", line 10, in <module>\n"
       "    x = x.cuda()\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
       "20.00 MiB. GPU 0 has a total capacity of 7.79 GiB of which 3.56 MiB is free.\n")
ILLEGAL = ("Traceback (most recent call last):\n  File \"train.py\", line 10, in <module>\n"
           "    loss.item()\nRuntimeError: CUDA error: an illegal memory access was "
           "encountered\nCUDA kernel errors might be asynchronously reported at some other "
           "API call, so the stacktrace below might be incorrect.\n")


def _log(path: Path, total: int, at: int, error: str = OOM) -> None:
    """``total`` bytes of ASCII log lines with ``error`` after ``at`` bytes."""
    head = (LINE * (at // len(LINE) + 1))[:at]
    head = head[:head.rfind("\n") + 1]
    body = head + error
    rest = total - len(body)
    tail = (LINE * (rest // len(LINE) + 1))[:rest]
    path.write_text(body + tail)


def _one_line(path: Path, total: int) -> None:
    chunk = "x" * 1000 + " step ok; "
    half = (chunk * (total // 2 // len(chunk) + 1))[: total // 2]
    error = " RuntimeError: CUDA error: an illegal memory access was encountered; "
    rest = total - len(half) - len(error)
    path.write_text(half + error + (chunk * (rest // len(chunk) + 1))[:rest])


def _junk(path: Path, total: int) -> None:
    rng = random.Random(4)
    junk = bytes(rng.choice([0, 0, 0xFF, 0xFE, 0x80, 0xC3, 0x28, 0x0A, 0x41]) for _ in range(4096))
    half = (junk * (total // 2 // len(junk) + 1))[: total // 2]
    error = b"\n" + OOM.encode() + b"\n"
    rest = total - len(half) - len(error)
    path.write_bytes(half + error + (junk * (rest // len(junk) + 1))[:rest])


def _big_py(path: Path, total: int = 20_000_000) -> None:
    with open(path, "w") as f:
        f.write("import torch\nm = torch.load('x.pt')\n")
        n, i = 0, 0
        while n < total:
            s = f"v{i} = [{i}, {i + 1}, '{i:08d}']\n"
            f.write(s)
            n += len(s)
            i += 1
