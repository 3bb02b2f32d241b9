"""Hostile audit cases: bad options and values for every command (prefix ``opt.``).

Each usage error must be one line (click's 3-line usage block is accepted), name the option
and the value, and exit 2 (pytest's own usage errors exit 4, its convention). A few odd but
valid values must simply work: the smallest intervals, huge limits, unicode paths, a path
with a space or a newline in it.
"""

from __future__ import annotations

import json
import os
import random
import signal
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
    one_line_error,
    sha,
    took_at_most,
    unchanged,
)

NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups"
OOM = ("Traceback (most recent call last):\n  File \"train.py\", line 3, in <module>\n"
       "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a "
       "total capacity of 7.79 GiB of which 3.12 MiB is free.\n")
MIXED = ("RuntimeError: Expected all tensors to be on the same device, but found at least two "
         "devices, cuda:0 and cpu!")
SEVERAL = (OOM + "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_INITIALIZED\n"
           "RuntimeError: CUDA error: device-side assert triggered\n"
           + MIXED + "\n")
LINT_BAD = 'import torch\nm = torch.load("x.pt")\n'
TRAIN = "{sm} train --epochs 1 --data-root {data} --checkpoint-dir {tmp}/ck"


# --- checks -------------------------------------------------------------------------------

def usage(*words: str) -> Check:
    """A usage error: one line (or click's block) that names the option and the value."""
    return all_of(one_line_error, error_names(*words))


def json_matches(low: int, high: int) -> Check:
    def check(r: Ran) -> str | None:
        try:
            n = len(json.loads(r.out)["matches"])
        except (ValueError, KeyError, TypeError) as exc:
            return f"wrong: no JSON matches ({exc})"
        return None if low <= n <= high else f"wrong: {n} matches, expected {low}..{high}"
    return check


def trained(r: Ran) -> str | None:
    return None if "final: test acc" in r.out else "wrong: no 'final: test acc' line"


def no_silent_nan(r: Ran) -> str | None:
    """A run that diverges must stop and say so naming --lr; one that ends 0 must not have
    printed a nan/inf loss as if it were a figure."""
    if r.rc == 0:
        bad = [ln for ln in r.out.splitlines()
               if ln.startswith("epoch") and ("nan" in ln.lower() or " inf" in ln.lower())]
        return f"wrong: exit 0 after a non-finite loss: {bad[0]!r}" if bad else None
    return error_names("--lr")(r)


# the host name in --rdzv-endpoint does not resolve: any of the usual wordings
RESOLUTION = names_any("resolve", "unknown host", "not known", "no such host")
SHIM = fake_pynvml("mod = fk.build_module(fk.one_gpu(name='Audit Fake GPU'))\n")


# --- setups -------------------------------------------------------------------------------

def files(entries: dict[str, str | bytes], *, modes: dict[str, int] | None = None,
          owner: dict[str, int] | None = None) -> Setup:
    """Write ``entries`` (relative path -> content), remember each file's sha."""
    def setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
        for rel, content in entries.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                p.write_text(content, encoding="utf-8")
            else:
                p.write_bytes(content)
            memo[rel] = sha(p)
        for rel, mode in (modes or {}).items():
            os.chmod(tmp / rel, mode)
        for rel, uid in (owner or {}).items():
            os.chown(tmp / rel, uid, uid)
    return setup


def pytest_setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    (tmp / "test_t.py").write_text("def test_plain():\n    assert 1\n\n\n"
                                   "def test_device(device):\n    assert device\n")


def binary_setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    (tmp / "blob.bin").write_bytes(random.Random(9).randbytes(2 << 20))


def huge_line_setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    """30 MB on one line (no newline at all), the error in the middle."""
    pad = "x" * (15 << 20)
    (tmp / "one.log").write_text(pad + " " + OOM.replace("\n", " ") + " " + pad)


def huge_py_setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    """A 4 MB generated .py (a data table, as some projects check in) with one finding."""
    body = "".join(f"v{i} = {i}\n" for i in range(400_000))
    (tmp / "big.py").write_text(LINT_BAD + body)


def odd_paths_setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    d = tmp / "dir with space" / "ünïcödé"
    d.mkdir(parents=True, exist_ok=True)
    (d / "err log.txt").write_text(OOM)
    (tmp / "bad\nname.py").write_text(LINT_BAD)
    data = tmp / "dä ta x"
    data.mkdir(exist_ok=True)
    if not (data / "FashionMNIST").is_symlink():
        (data / "FashionMNIST").symlink_to(Path(env.data) / "FashionMNIST")


def ro_lint_setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    files({"ro/t.py": LINT_BAD})(tmp, env, memo)  # root's file in root's folder


def ro_own_lint_setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    """nobody's own file, made read-only by its owner (chmod 444), in nobody's folder."""
    files({"mine/t.py": LINT_BAD})(tmp, env, memo)
    os.chown(tmp / "mine", 65534, 65534)
    os.chown(tmp / "mine" / "t.py", 65534, 65534)
    os.chmod(tmp / "mine" / "t.py", 0o444)


def fifo_setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    fifo = tmp / "fifo"
    if not fifo.is_fifo():
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)


# --- cases --------------------------------------------------------------------------------

def _c(id_: str, script: str, exit: str = "2", check: Check | None = None, *,
       timeout: float = 60.0, note: str = "", **kw: object) -> Case:
    return Case(id="opt." + id_, group="options", script=script, exit=exit, check=check,
                timeout=timeout, note=note, **kw)  # type: ignore[arg-type]


def _doctor() -> list[Case]:
    out = []
    for what, value, word in (("nan", "nan", "nan"), ("inf", "inf", "inf"),
                              ("neg", "-5", "-5"), ("zero", "0", "0"),
                              ("huge", "1e12", "1e"), ("abc", "abc", "abc"),
                              ("empty", "''", "--timeout")):
        out.append(_c(f"doctor.timeout_{what}", f"exec {{dc}} doctor --timeout {value}",
                      check=all_of(usage("--timeout", word), took_at_most(15)),
                      note=f"doctor --timeout {value}"))
    out += [
        _c("doctor.require_bogus", "exec {dc} doctor --require bogus",
           check=usage("--require", "bogus"), note="unknown --require kind"),
        _c("doctor.json_and_markdown", "exec {dc} doctor --json --markdown",
           check=usage("--json", "--markdown"), note="two output formats at once"),
        _c("doctor.require_no_live", "exec {dc} doctor --require cuda --no-live",
           check=usage("--require", "--no-live"), note="--require without the live check"),
        _c("doctor.require_cuda_here", "exec {dc} doctor --require cuda --no-color", exit="1",
           check=error_names("cuda"), timeout=120,
           note="--require cuda on a GPU-less machine: exit 1, says why"),
        _c("doctor.timeout_tiny_json", "exec {dc} doctor --timeout 0.001 --json", exit="0,1",
           check=json_doc(), timeout=120,
           note="valid but tiny probe timeout: still one JSON document"),
    ]
    return out


def _gpus() -> list[Case]:
    return [
        _c("gpus.interval_without_watch", "exec {dc} gpus -i 1",
           check=usage("interval", "--watch"), note="-i without --watch"),
        _c("gpus.interval_nan", "exec {dc} gpus --watch -i nan",
           check=usage("interval", "nan"), note="--watch -i nan"),
        _c("gpus.interval_zero", "exec {dc} gpus --watch -i 0",
           check=usage("interval", "0"), note="--watch -i 0 (a busy loop)"),
        _c("gpus.interval_neg", "exec {dc} gpus --watch -i -1",
           check=usage("interval", "-1"), note="--watch -i -1"),
        _c("gpus.interval_1e9", "exec {dc} gpus --watch -i 1e9",
           check=usage("interval", "1e"), note="--watch -i 1e9 (overflows sleep)"),
        _c("gpus.watch_markdown", "exec {dc} gpus --watch --markdown",
           check=usage("--markdown", "--watch"), note="--watch with --markdown"),
        _c("gpus.watch_long_interval_ctrl_c",
           "PYTHONPATH={tmp}/shim exec {dc} gpus --watch -i 3600", exit="0",
           setup=SHIM, signal=(signal.SIGINT, "Audit Fake GPU"), timeout=60,
           note="fake GPU, -i 3600, Ctrl-C during the sleep: ends at once, exit 0"),
        _c("gpus.watch_min_interval_head",
           "set -o pipefail; PYTHONPATH={tmp}/shim {dc} gpus --watch --json -i 0.05 | head -3;"
           " echo \"rc=${{PIPESTATUS[0]}}\" >&2; exit 0", exit="0",
           check=json_lines(exactly=3), setup=SHIM, timeout=60,
           note="valid -i 0.05 piped into head -3: 3 JSON lines, no BrokenPipe noise"),
    ]


def _explain() -> list[Case]:
    oom = {"err.txt": OOM}
    return [
        _c("explain.limit_zero", "exec {dc} explain --limit 0 err.txt", setup=files(oom),
           check=usage("--limit", "0"), note="--limit 0"),
        _c("explain.limit_neg", "exec {dc} explain --limit -1 err.txt", setup=files(oom),
           check=usage("--limit", "-1"), note="--limit -1"),
        _c("explain.limit_abc", "exec {dc} explain --limit abc err.txt", setup=files(oom),
           check=usage("--limit", "abc"), note="--limit abc"),
        _c("explain.limit_huge", "exec {dc} explain --limit 99999999999999999999999 err.txt",
           exit="0", setup=files(oom), check=error_names("cuda_out_of_memory"),
           note="--limit 10**23 is valid: works"),
        _c("explain.limit_1000", "exec {dc} explain --json --limit 1000 several.txt",
           exit="0", setup=files({"several.txt": SEVERAL}), check=json_matches(2, 1000),
           note="--limit 1000 on four errors: several matches"),
        _c("explain.limit_one", "exec {dc} explain --json --limit 1 several.txt",
           exit="0", setup=files({"several.txt": SEVERAL}), check=json_matches(1, 1),
           note="--limit 1 on four errors: exactly one match"),
        _c("explain.missing_file", "exec {dc} explain {tmp}/nope.txt",
           check=usage("nope.txt"), note="a file that does not exist"),
        _c("explain.directory", "mkdir -p d && exec {dc} explain d", check=usage("'d'"),
           note="a directory"),
        _c("explain.binary", "exec {dc} explain blob.bin", exit="0,1", setup=binary_setup,
           note="2 MB of random bytes"),
        _c("explain.empty_file", ": > empty.txt && exec {dc} explain empty.txt", exit="1",
           check=error_names("no known"), note="an empty file: no match, exit 1, said"),
        _c("explain.dev_null", "exec {dc} explain /dev/null", exit="1",
           check=error_names("no known"), note="/dev/null"),
        _c("explain.fifo_no_writer_ctrl_c", "exec {dc} explain fifo", exit="!0",
           setup=fifo_setup, signal=(signal.SIGINT, 3.0),
           note="a FIFO nobody writes (blocks by design): Ctrl-C ends it cleanly"),
        _c("explain.fifo_with_writer",
           "( sleep 1; cat err.txt > fifo ) & exec {dc} explain fifo", exit="0",
           setup=chain(files(oom), fifo_setup),
           check=error_names("cuda_out_of_memory"), note="a FIFO with a slow writer: works"),
        _c("explain.huge_one_line", "exec {dc} explain one.log", exit="0",
           setup=huge_line_setup, check=error_names("cuda_out_of_memory"), timeout=120,
           note="30 MB on one line, the OOM in the middle: matched"),
        _c("explain.odd_path", "exec {dc} explain 'dir with space/ünïcödé/err log.txt'",
           exit="0", setup=odd_paths_setup, check=error_names("cuda_out_of_memory"),
           note="a path with spaces and non-ASCII letters"),
    ]


def _pitfalls() -> list[Case]:
    out = [
        _c("pitfalls.show_unknown", "exec {dc} pitfalls show no_such_pitfall",
           check=usage("no_such_pitfall"), note="show an unknown id"),
        _c("pitfalls.show_empty", "exec {dc} pitfalls show ''", check=one_line_error,
           note="show ''"),
        _c("pitfalls.run_unknown", "exec {dc} pitfalls run no_such_pitfall",
           check=usage("no_such_pitfall"), note="run an unknown id"),
        _c("pitfalls.run_none", "exec {dc} pitfalls run", check=usage("--all"),
           note="run with neither an id nor --all"),
        _c("pitfalls.run_all_and_id", "exec {dc} pitfalls run --all tensor_to_not_inplace",
           check=usage("--all"), note="--all with an id"),
    ]
    for what, value, word in (("cuda_neg", "cuda:-1", "cuda:-1"), ("tpu", "tpu", "tpu"),
                              ("empty", "''", "--device"), ("cuda_x", "cuda:x", "cuda:x")):
        out.append(_c(f"pitfalls.device_{what}",
                      f"exec {{dc}} pitfalls run tensor_to_not_inplace --device {value}",
                      check=usage("--device", word), note=f"--device {value}"))
    out += [
        _c("pitfalls.device_trailing_space",
           "exec {dc} pitfalls run tensor_to_not_inplace --device 'cuda:0 '", exit="0,2",
           check=error_names("cuda"), timeout=120,
           note="--device 'cuda:0 ': an error naming it, or run and skip (no CUDA)"),
        _c("pitfalls.device_cuda99",
           "exec {dc} pitfalls run tensor_to_not_inplace --device cuda:99", exit="0,1",
           check=error_names("skip"), timeout=180,
           note="--device cuda:99 on a machine without CUDA: skipped with the reason"),
    ]
    for what, value, word in (("nan", "nan", "nan"), ("inf", "inf", "inf"),
                              ("neg", "-5", "-5"), ("zero", "0", "0")):
        out.append(_c(f"pitfalls.timeout_{what}",
                      f"exec {{dc}} pitfalls run tensor_to_not_inplace --timeout {value}",
                      check=usage("--timeout", word), note=f"pitfalls run --timeout {value}"))
    out.append(_c("pitfalls.timeout_tiny",
                  "exec {dc} pitfalls run tensor_to_not_inplace --device cpu --timeout 0.001",
                  exit="1", check=error_names("timed out"), timeout=120,
                  note="a valid 1 ms timeout: each phase killed, said, nothing left"))
    return out


def _lint() -> list[Case]:
    good = {"good.py": LINT_BAD}
    return [
        _c("lint.missing_path", "exec {dc} lint {tmp}/nope.py", check=usage("nope.py"),
           note="a path that does not exist"),
        _c("lint.binary_py", "exec {dc} lint good.py bin.py",
           setup=files({**good, "bin.py": random.Random(3).randbytes(5000)}),
           check=all_of(error_names("bin.py", "gpu_checkpoint_on_cpu"), unchanged("bin.py")),
           note="random bytes named .py next to a good file: error names it, rest checked"),
        _c("lint.syntax_error", "exec {dc} lint good.py broken.py",
           setup=files({**good, "broken.py": "def f(:\n    pass\n"}),
           check=error_names("broken.py", "gpu_checkpoint_on_cpu"),
           note="a .py with a syntax error"),
        _c("lint.null_byte", "exec {dc} lint nul.py", setup=files({"nul.py": b"x = 1\0\n"}),
           check=error_names("nul.py"), note="a null byte in a .py"),
        _c("lint.huge_py", "exec {dc} lint big.py", exit="1", setup=huge_py_setup,
           check=error_names("gpu_checkpoint_on_cpu"), timeout=180,
           note="a 4 MB .py (400k lines): linted, its finding reported"),
        _c("lint.ipynb_not_json", "exec {dc} lint nb.ipynb",
           setup=files({"nb.ipynb": "this is not json {"}), check=error_names("nb.ipynb"),
           note="an .ipynb that is not JSON"),
        _c("lint.ipynb_list_json", "exec {dc} lint nb.ipynb", setup=files({"nb.ipynb": "[]"}),
           check=error_names("nb.ipynb"), note="an .ipynb that is a JSON list"),
        _c("lint.ipynb_bad_source_item", "exec {dc} lint nb.ipynb",
           exit="1,2", setup=files({"nb.ipynb": json.dumps({"cells": [
               {"cell_type": "code", "source": ["import torch\n", 5]}]})}),
           check=error_names("nb.ipynb"),
           note="a notebook whose cell source list holds a number"),
        _c("lint.select_unknown", "exec {dc} lint --select bogus_rule good.py",
           setup=files(good), check=usage("--select", "bogus_rule"), note="--select bogus"),
        _c("lint.ignore_unknown",
           "exec {dc} lint --ignore torch_load_weights_only,bogus_rule good.py",
           setup=files(good), check=usage("--ignore", "bogus_rule"),
           note="--ignore with one unknown id among good ones"),
        _c("lint.fix_and_diff", "exec {dc} lint --fix --diff good.py", exit="1,2",
           setup=files(good), check=unchanged("good.py"),
           note="--fix with --diff: a usage error or a diff, the file untouched"),
        _c("lint.fix_readonly_dir", f"exec {NOBODY} {{dc}} lint --fix ro/t.py", exit="1,2",
           setup=ro_lint_setup,
           check=all_of(unchanged("ro/t.py"), no_temporaries, error_names("t.py", "permission"),
                        not_in_output("free space", "could not be parsed")),
           note="--fix as nobody on root's file: the error names it and the real cause"),
        _c("lint.fix_readonly_file", f"exec {NOBODY} {{dc}} lint --fix mine/t.py",
           exit="1,2", setup=ro_own_lint_setup,
           check=all_of(unchanged("mine/t.py"), no_temporaries, error_names("t.py")),
           note="--fix on the user's own chmod 444 file: must not replace it"),
        _c("lint.newline_in_name", "exec {dc} lint \"$(printf 'bad\\nname.py')\"", exit="1",
           setup=odd_paths_setup, check=error_names("gpu_checkpoint_on_cpu"),
           note="a file name with a newline in it: linted"),
    ]


def _run() -> list[Case]:
    crash = f"raise RuntimeError({MIXED!r})"
    return [
        _c("run.no_command", "exec {dc} run", check=usage("command"), note="run alone"),
        _c("run.only_dashes", "exec {dc} run --", check=usage("command"),
           note="run -- and nothing"),
        _c("run.not_found", "exec {dc} run --no-plot --out o -- no_such_cmd_xyz", exit="127",
           check=all_of(one_line_error, error_names("no_such_cmd_xyz")),
           note="a command that does not exist: 127"),
        _c("run.not_executable", "exec {dc} run --no-plot --out o -- ./job.sh", exit="126",
           setup=files({"job.sh": "echo hi\n"}, modes={"job.sh": 0o644}),
           check=all_of(one_line_error, error_names("job.sh")), note="not executable: 126"),
        _c("run.interval_nan", "exec {dc} run -i nan -- true", check=usage("interval", "nan"),
           note="-i nan"),
        _c("run.interval_zero", "exec {dc} run -i 0 -- true", check=usage("interval", "0"),
           note="-i 0"),
        _c("run.interval_neg", "exec {dc} run -i -1 -- true", check=usage("interval", "-1"),
           note="-i -1"),
        _c("run.interval_eq_abc", "exec {dc} run --interval=abc -- true",
           check=usage("interval", "abc"), note="--interval=abc"),
        _c("run.out_is_file", "exec {dc} run --out afile -- true",
           setup=files({"afile": "keep me\n"}),
           check=all_of(usage("--out", "afile"), unchanged("afile")),
           note="--out naming an existing file: error, file kept"),
        _c("run.exit_code_3", "exec {dc} run --no-plot --out o -- {py} -c 'raise SystemExit(3)'",
           exit="3", note="the job's exit code 3 comes back"),
        _c("run.crash_explained",
           f"exec {{dc}} run --no-plot --out o -- {{py}} -c \"{crash}\"", exit="1",
           child_traceback=True, check=error_names("mixed_devices"),
           note="a crashing job: exit 1, its error explained"),
        _c("run.interval_min",
           "exec {dc} run -i 0.01 --no-plot --out o -- {py} -c 'import time; time.sleep(1)'",
           exit="0", check=all_of(exists("o/summary.json"), exists("o/timeline.jsonl")),
           note="valid -i 0.01 (100 Hz): works, files written"),
        _c("run.interval_max", "exec {dc} run -i 3600 --no-plot --out o -- true", exit="0",
           check=took_at_most(30), note="valid -i 3600: a 0.1 s job must not wait an interval"),
        _c("run.odd_out_dir",
           "exec {dc} run --no-plot --out 'out dir ü' -- true", exit="0",
           check=exists("out dir ü/summary.json"), note="--out with a space and a ü"),
    ]


def _dist() -> list[Case]:
    out = []
    for what, value in (("zero", "0"), ("neg", "-1"), ("abc", "abc"), ("1000", "1000")):
        out.append(_c(f"dist.nproc_{what}", f"exec {{dc}} dist --nproc {value}",
                      check=usage("--nproc", value), note=f"--nproc {value}"))
    for what, value in (("nan", "nan"), ("neg", "-1"), ("zero", "0")):
        out.append(_c(f"dist.timeout_{what}", f"exec {{dc}} dist --timeout {value}",
                      check=usage("--timeout", value), note=f"--timeout {value}"))
    for what, value, word in (("empty", "''", "--sizes"), ("abc", "abc", "abc"),
                              ("neg", "-1", "-1"), ("1e30", "1e30", "1e30")):
        out.append(_c(f"dist.sizes_{what}", f"exec {{dc}} dist --sizes {value}",
                      check=usage("--sizes", word), note=f"--sizes {value}"))
    out += [
        _c("dist.backend_bogus", "exec {dc} dist --backend bogus",
           check=usage("--backend", "bogus"), note="--backend bogus"),
        _c("dist.min_busbw_nan", "exec {dc} dist --min-busbw nan",
           check=usage("--min-busbw", "nan"), note="--min-busbw nan"),
        _c("dist.nnodes_zero", "exec {dc} dist --nnodes 0", check=usage("--nnodes", "0"),
           note="--nnodes 0"),
        _c("dist.node_rank_too_big", "exec {dc} dist --nnodes 2 --node-rank 5",
           check=usage("--node-rank", "5"), note="--node-rank 5 with --nnodes 2"),
        _c("dist.nccl_no_gpu", "exec {dc} dist --backend nccl", exit="1",
           check=all_of(error_names("nccl"), not_in_output("--preflight-only")), timeout=120,
           note="--backend nccl without a GPU: exit 1, says why, no false claims"),
        _c("dist.rdzv_bad_port", "exec {dc} dist --nnodes 2 --rdzv-endpoint nohost:xx "
           "--timeout 20", check=all_of(usage("--rdzv-endpoint", "nohost:xx", "port"),
                                        not_in_output("never arrived")),
           timeout=120, note="--rdzv-endpoint nohost:xx: the port is not a number"),
        _c("dist.rdzv_bad_port_one_node", "exec {dc} dist --rdzv-endpoint nohost:xx "
           "--timeout 20", check=usage("--rdzv-endpoint", "nohost:xx", "port"),
           timeout=120, note="--rdzv-endpoint nohost:xx on one node"),
        _c("dist.rdzv_port_out_of_range", "exec {dc} dist --rdzv-endpoint 127.0.0.1:70000 "
           "--timeout 20", check=usage("--rdzv-endpoint", "70000"), timeout=120,
           note="--rdzv-endpoint with port 70000"),
        _c("dist.rdzv_unresolvable_host", "exec {dc} dist --nnodes 2 --rdzv-endpoint "
           "nohost.invalid:29400 --timeout 20", exit="1,2",
           check=all_of(error_names("nohost.invalid"), RESOLUTION, not_in_output("only this node")),
           timeout=120, note="a rendezvous host that does not resolve: say so"),
        _c("dist.one_rank_gloo",
           "exec {dc} dist --nproc 1 --backend gloo --sizes 4KiB --timeout 120", exit="0",
           check=error_names("ok"), timeout=240, note="valid: one gloo rank, one size"),
    ]
    return out


def _train() -> list[Case]:
    out = []
    bad = [("epochs_zero", "--epochs 0", "--epochs", "0"),
           ("epochs_neg", "--epochs -1", "--epochs", "-1"),
           ("epochs_abc", "--epochs abc", "--epochs", "abc"),
           ("lr_nan", "--lr nan", "--lr", "nan"),
           ("lr_inf", "--lr inf", "--lr", "inf"),
           ("lr_neg", "--lr -1", "--lr", "-1"),
           ("lr_zero", "--lr 0", "--lr", "0"),
           ("batch_zero", "--batch-size 0", "--batch-size", "0"),
           ("device_empty", "--device ''", "--device", "--device"),
           ("threads_zero", "--threads 0", "--threads", "0"),
           ("threads_huge", "--threads 100000", "--threads", "100000"),
           ("workers_neg", "--loader dataloader --workers -1", "--workers", "-1"),
           ("workers_huge", "--loader dataloader --workers 1000", "--workers", "1000"),
           ("seed_2_70", f"--seed {2**70}", "--seed", str(2**70)),
           ("checkpoint_dir_empty", "--checkpoint-dir ''", "--checkpoint-dir",
            "--checkpoint-dir")]
    for what, opts, opt, word in bad:
        out.append(_c(f"train.{what}", f"exec {TRAIN} {opts}",
                      check=usage(opt, word), timeout=120, note=f"train {opts}"))
    for what, value in (("cuda", "cuda"), ("cuda_neg", "cuda:-1"), ("tpu", "tpu"),
                        ("mps", "mps")):
        out.append(_c(f"train.device_{what}", f"exec {TRAIN} --device {value}", exit="1,2",
                      check=usage("--device", value), timeout=120,
                      note=f"--device {value} here (no GPU): one line naming it"))
    out += [
        _c("train.lr_1e10", f"exec {TRAIN} --epochs 2 --lr 1e10 --lr-schedule constant",
           exit="0,1", check=no_silent_nan, timeout=180,
           note="--lr 1e10: either finite figures or a clear stop naming --lr"),
        _c("train.lr_1e300", f"exec {TRAIN} --lr 1e300", exit="1,2", check=usage("--lr"),
           timeout=180, note="--lr 1e300 (finite double, overflows float32)"),
        _c("train.lr_1e39_concise", f"exec {TRAIN} --lr 1e39 --model concise", exit="1,2",
           check=usage("--lr"), timeout=180,
           note="--lr 1e39 with the nn.Linear/optim.SGD model"),
        _c("train.epochs_2_70", f"exec {TRAIN} --epochs {2**70}", exit="1,2",
           check=usage("--epochs"), timeout=180,
           note="--epochs 2**70: refused, or at least no crash after epoch 1"),
        _c("train.seed_max_dataloader",
           f"exec {TRAIN} --seed {2**64 - 1} --loader dataloader --workers 1", exit="0",
           check=trained, timeout=240, note="valid: the largest seed, worker seeding"),
        _c("train.batch_huge", f"exec {TRAIN} --batch-size 1000000000", exit="0",
           check=trained, timeout=180, note="valid: one batch holds the whole dataset"),
        _c("train.seed_neg", f"exec {TRAIN} --seed -1", exit="0", check=trained, timeout=180,
           note="valid: --seed -1"),
        _c("train.data_root_missing",
           "exec {sm} train --epochs 1 --data-root {tmp}/no/such/root --checkpoint-dir "
           "{tmp}/ck", exit="any", check=error_names("no/such/root"), timeout=180,
           note="a missing --data-root: an error naming it, or says where it unpacked"),
        _c("train.data_root_empty",
           "mkdir -p empty && exec {sm} train --epochs 1 --data-root empty --checkpoint-dir ck",
           exit="any", check=error_names("empty"), timeout=180,
           note="an empty --data-root: says what it did with it"),
        _c("train.data_root_file", "exec {sm} train --epochs 1 --data-root afile",
           setup=files({"afile": "x"}), check=all_of(usage("--data-root", "afile"),
                                                     unchanged("afile")),
           timeout=120, note="--data-root naming a file"),
        _c("train.data_root_odd_path",
           "exec {sm} train --epochs 1 --data-root 'dä ta x' --checkpoint-dir 'c k ü'",
           exit="0", setup=odd_paths_setup, check=all_of(trained, exists("c k ü/last.pt")),
           timeout=180, note="a data root and checkpoint dir with spaces and umlauts"),
    ]
    return out


def _predict() -> list[Case]:
    out = []
    for what, value in (("zero", "0"), ("neg", "-1"), ("abc", "abc")):
        out.append(_c(f"predict.n_{what}", f"exec {{sm}} predict --data-root {{data}} -n {value}",
                      check=usage("-n", value), timeout=120, note=f"predict -n {value}"))
    out += [
        _c("predict.checkpoint_missing",
           "exec {sm} predict --data-root {data} --checkpoint {tmp}/nope.pt", exit="1,2",
           check=usage("nope.pt"), timeout=120, note="--checkpoint that does not exist"),
        _c("predict.checkpoint_dir", "mkdir -p ckd && exec {sm} predict --data-root {data} "
           "--checkpoint ckd", check=usage("--checkpoint", "ckd"), timeout=120,
           note="--checkpoint naming a directory"),
        _c("predict.checkpoint_empty", ": > e.pt && exec {sm} predict --data-root {data} "
           "--checkpoint e.pt", exit="1,2", check=usage("e.pt"), timeout=120,
           note="--checkpoint an empty file"),
        _c("predict.device_bogus",
           f"{TRAIN} >/dev/null && exec {{sm}} predict --data-root {{data}} "
           "--checkpoint {tmp}/ck/last.pt --device bogus", exit="1,2",
           check=usage("--device", "bogus"), timeout=240,
           note="--device bogus with a good checkpoint"),
    ]
    return out


def _pytest() -> list[Case]:
    base = "exec {py} -m pytest -q -p no:cacheprovider"
    out = []
    for slug, opt, value, why in (
            ("require_bogus", "--devcheck-require", "bogus", " (pytest usage error: exit 4)"),
            ("timeout_nan", "--devcheck-timeout", "nan", ""),
            ("timeout_neg", "--devcheck-timeout", "-1", ""),
            ("timeout_abc", "--devcheck-timeout", "abc", "")):
        out.append(_c(f"pytest.{slug}", f"{base} {opt} {value} test_t.py", exit="4",
                      setup=pytest_setup, check=error_names(opt, value), timeout=120,
                      note=f"{opt} {value}{why}"))
    out += [
        _c("pytest.only_gpu_and_cpu", f"{base} --only-gpu --only-cpu test_t.py", exit="4",
           setup=pytest_setup,
           check=all_of(one_line_error, error_names("--only-gpu", "--only-cpu")),
           timeout=120, note="--only-gpu with --only-cpu"),
        _c("pytest.explicit_p_devcheck", f"{base} -p devcheck test_t.py", exit="0",
           setup=pytest_setup, check=error_names("2 passed"), timeout=180,
           note="-p devcheck on top of the entry point: works"),
        _c("pytest.timeout_tiny", f"{base} --devcheck-timeout 0.001 test_t.py", exit="0",
           setup=pytest_setup, check=error_names("passed"), timeout=180,
           note="valid 1 ms probe timeout: the device fixture still runs (cpu)"),
    ]
    return out


CASES: list[Case] = [*_doctor(), *_gpus(), *_explain(), *_pitfalls(), *_lint(), *_run(),
                     *_dist(), *_train(), *_predict(), *_pytest()]
