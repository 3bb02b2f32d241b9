"""Hostile audit cases: signals, orphans and concurrency (prefix ``sig.``).

Each case stops something mid-work, as a user or a scheduler does: Ctrl-C at a terminal
(SIGINT to the foreground group), ``kill PID`` (SIGTERM), ``kill -9`` (SIGKILL, the hard
case: nothing can clean up, so children must die with their parent), a closed terminal
(SIGHUP). The judgement is the harness's (no traceback, no orphan, no hang) plus, here:
the exit code a shell would give (128+N; a program killed by the signal's default action
shows as -N in the harness, the same thing for a user), what finished still reported, the
output files still written, a checkpoint that still loads and a ``--resume`` that gives
bitwise the uninterrupted run.

Helpers written into the case's folder by ``setup``:
- ``treewatch.py ROOT DEPTH DELAY MARKER [KILL_DEPTH SIG]``: waits until ROOT (the
  program, exec'd by the case's shell) has a descendant DEPTH levels down (the lab's
  phase children, torchrun's workers, the doctor's torch probe), waits DELAY s, prints
  MARKER to stderr (the harness then sends its signal) or kills the process at KILL_DEPTH;
- ``compare.py A.pt B.pt [A.json B.json]``: prints RESUME-EXACT, or RESUME-DIFFERS and
  what differs (parameters, shuffling generator, epoch, per-epoch metrics).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import TypeVar

from audit.harness import (
    Case,
    Check,
    Env,
    Ran,
    all_of,
    chain,
    error_names,
    fake_pynvml,
    json_lines,
    no_temporaries,
    sha,
    took_at_most,
)

INT, TERM, KILL, HUP = signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP
G = "signals"
T = TypeVar("T")
# how a case stops its program: the signal, sent to the process group (Ctrl-C at a
# terminal) or to the main process (kill PID)
STOP: dict[str, tuple[signal.Signals, str]] = {
    "int-group": (INT, "group"), "int-main": (INT, "main"), "term-main": (TERM, "main"),
    "kill-main": (KILL, "main"), "hup-main": (HUP, "main")}


def _stops(codes: dict[str, T]) -> list[tuple[str, signal.Signals, str, T]]:
    """(stop name, signal, target, expected exit) for each stop named in ``codes``, in order."""
    return [(name, *STOP[name], code) for name, code in codes.items()]

# ---------------------------------------------------------------------------------------
# helper programs

TREEWATCH = r'''
import os, signal, sys, time

root, depth, delay, marker = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
kill_depth = int(sys.argv[5]) if len(sys.argv) > 5 else None
kill_sig = getattr(signal, sys.argv[6]) if len(sys.argv) > 6 else signal.SIGKILL
me = os.getpid()


def tree():
    kids = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(b")") + 2:].split()
        if rest[0] == b"Z":
            continue
        kids.setdefault(int(rest[1]), []).append(int(e))
    out, todo = {}, [(root, 0)]
    while todo:
        p, d = todo.pop()
        for c in kids.get(p, []):
            if c != me:
                out[c] = d + 1
                todo.append((c, d + 1))
    return out


deadline = time.monotonic() + 400
while time.monotonic() < deadline:
    try:
        os.kill(root, 0)
    except ProcessLookupError:
        sys.exit(0)
    t = tree()
    if any(d >= depth for d in t.values()):
        time.sleep(delay)
        t = tree()
        deep = sorted(p for p, d in t.items() if d >= depth)
        if kill_depth is not None:
            victims = [p for p, d in t.items() if d == kill_depth]
            for p in victims:
                os.kill(p, kill_sig)
            print(f"[treewatch] {marker}: sent {kill_sig.name} to {victims} (depth "
                  f"{kill_depth}); deeper: {deep}", file=sys.stderr, flush=True)
        else:
            print(f"[treewatch] {marker}: depth>={depth}: {deep}", file=sys.stderr,
                  flush=True)
        sys.exit(0)
    time.sleep(0.05)
print(f"[treewatch] never saw depth {depth}", file=sys.stderr, flush=True)
'''

COMPARE = r'''
import json, sys
import torch

a = torch.load(sys.argv[1], weights_only=True)
b = torch.load(sys.argv[2], weights_only=True)
diffs = []
if a.get("epoch") != b.get("epoch"):
    diffs.append(f"epoch {a.get('epoch')} != {b.get('epoch')}")
for k in sorted(set(a["state"]) | set(b["state"])):
    x, y = a["state"].get(k), b["state"].get(k)
    if x is None or y is None or x.shape != y.shape or not torch.equal(x, y):
        d = (x - y).abs().max().item() if x is not None and y is not None and \
            x.shape == y.shape else "missing"
        diffs.append(f"parameter {k} differs (max abs diff {d})")
ga, gb = a.get("generator"), b.get("generator")
if ga is None or gb is None or not torch.equal(ga, gb):
    diffs.append("shuffling generator state differs")
if len(sys.argv) > 4:
    ma, mb = (json.load(open(p))["epochs"] for p in sys.argv[3:5])
    keys = ("epoch", "train_loss", "train_acc", "test_acc")
    ea = [tuple(e[k] for k in keys) for e in ma]
    eb = [tuple(e[k] for k in keys) for e in mb]
    if ea != eb:
        diffs.append(f"metrics differ: resumed {ea[-3:]} vs uninterrupted {eb[-3:]}")
print("RESUME-EXACT" if not diffs else "RESUME-DIFFERS: " + "; ".join(diffs))
'''

WORKERS_JOB = r'''
import multiprocessing as mp, sys, time


def work():
    time.sleep(300)


if __name__ == "__main__":
    procs = [mp.Process(target=work) for _ in range(2)]
    for p in procs:
        p.start()
    print("job-ready: 2 workers", file=sys.stderr, flush=True)
    time.sleep(300)
'''

DATALOADER_JOB = r'''
import sys, time
import torch
from torch.utils.data import DataLoader, Dataset


class Slow(Dataset):
    def __len__(self):
        return 10**6

    def __getitem__(self, i):
        time.sleep(0.01)
        return torch.zeros(4)


if __name__ == "__main__":
    n = 0
    for batch in DataLoader(Slow(), batch_size=8, num_workers=2):
        n += 1
        if n == 3:
            print("job-ready: DataLoader with 2 workers", file=sys.stderr, flush=True)
'''


def _write(tmp: Path, name: str, text: str) -> None:
    (tmp / name).write_text(text.lstrip(), encoding="utf-8")


def helpers(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    _write(tmp, "treewatch.py", TREEWATCH)
    _write(tmp, "compare.py", COMPARE)
    _write(tmp, "job_workers.py", WORKERS_JOB)
    _write(tmp, "job_dataloader.py", DATALOADER_JOB)


# ---------------------------------------------------------------------------------------
# the uninterrupted reference runs, computed once per (loader, epochs) and shared

_REF_LOCK = threading.Lock()
_REFS: dict[tuple[str, int], tuple[Path | None, str]] = {}


def _train_opts(loader: str) -> str:
    workers = " --workers 2" if loader == "dataloader" else ""
    return (f"--device cpu --seed 0 --lr-schedule constant --loader {loader}{workers}")


def _reference(tmp: Path, env: Env, loader: str, epochs: int) -> tuple[Path | None, str]:
    with _REF_LOCK:
        key = (loader, epochs)
        if key in _REFS:
            return _REFS[key]
        ref = tmp.parent / f"_sig_reference_{loader}_{epochs}"
        ref.mkdir(parents=True, exist_ok=True)
        cmd = (f"{env.sm} train --data-root {env.data} {_train_opts(loader)} "
               f"--epochs {epochs} --checkpoint-dir {ref}/ck --metrics-json {ref}/m.json")
        try:
            p = subprocess.run(["bash", "-c", cmd], cwd=ref, capture_output=True, text=True,
                               timeout=1200)
            ok = p.returncode == 0 and (ref / "ck" / "last.pt").is_file()
            why = "" if ok else f"reference run exit {p.returncode}: {p.stderr[-300:]}"
        except subprocess.TimeoutExpired:
            ok, why = False, "reference run took over 1200 s"
        _REFS[key] = (ref if ok else None, why)
        return _REFS[key]


def with_reference(loader: str, epochs: int):  # noqa: ANN201
    def setup(tmp: Path, env: Env, memo: dict[str, object]) -> None:
        helpers(tmp, env, memo)
        ref, why = _reference(tmp, env, loader, epochs)
        memo["ref"] = str(ref) if ref else None
        memo["ref_error"] = why
        (tmp / "ref").write_text(str(ref) if ref else "", encoding="utf-8")
    return setup


# ---------------------------------------------------------------------------------------
# checks

def _markers(r: Ran, prefix: str) -> list[str]:
    return [ln for ln in r.text.splitlines() if ln.startswith(prefix)]


def no_orphan_markers(r: Ran) -> str | None:
    """The script's own orphan probe: ORPHAN lines (children alive 5 s after their parent)."""
    lines = _markers(r, "ORPHAN")
    return "orphan: " + "; ".join(lines[:3]) if lines else None


def no_treewatch_failure(r: Ran) -> str | None:
    if "[treewatch] never saw" in r.text:
        return "signal: the process tree never reached the depth the case waits for"
    return None


def run_outputs(exit_code: int, *, plot: bool = False, forwarded: str | None = None,
                out: str = "o") -> Check:
    """devcheck run's folder after a signal: timeline.jsonl complete (start ... end with
    the job's exit code), summary.json with the same code, no temporary left."""
    def check(r: Ran) -> str | None:
        d = r.tmp / out
        if not d.is_dir():
            return f"loss: no output folder {out}/"
        left = [p.name for p in d.iterdir() if ".tmp" in p.name]
        if left:
            return f"loss: temporaries left in {out}/: {', '.join(sorted(left))}"
        try:
            lines = [json.loads(x) for x in (d / "timeline.jsonl").read_text().splitlines()]
        except (OSError, ValueError) as exc:
            return f"loss: timeline.jsonl missing or not JSON lines ({exc})"
        if not lines or lines[0].get("kind") != "start" or lines[-1].get("kind") != "end":
            return "loss: timeline.jsonl lacks its start or end line"
        if lines[-1].get("exit_code") != exit_code:
            return f"wrong: timeline.jsonl end exit_code {lines[-1].get('exit_code')}, " \
                   f"expected {exit_code}"
        try:
            summary = json.loads((d / "summary.json").read_text())
        except (OSError, ValueError) as exc:
            return f"loss: summary.json missing or not JSON ({exc})"
        if summary.get("exit_code") != exit_code:
            return f"wrong: summary.json exit_code {summary.get('exit_code')}, " \
                   f"expected {exit_code}"
        if plot and not (d / "timeline.png").is_file():
            return "loss: timeline.png not written"
        if forwarded:
            events = [e for s in lines for e in s.get("events") or []
                      if e.get("kind") == "signal_forwarded"]
            if not any(forwarded in (e.get("message") or "") for e in events):
                return f"loss: no signal_forwarded event for {forwarded} in timeline.jsonl"
        return None
    return check


def lab_stopped(sig: str, *, finished_min: int = 0) -> Check:
    """pitfalls run after a signal: says it stopped, names the signal, reports what
    finished (``k of n finished``, with k >= finished_min)."""
    def check(r: Ran) -> str | None:
        m = re.search(r"stopped by (\w+) while running (\w+) \((\d+) of (\d+) finished\)",
                      r.err)
        if not m:
            return "message: no 'stopped by SIG... while running ID (k of n finished)' line"
        if m.group(1) != sig:
            return f"wrong: says stopped by {m.group(1)}, expected {sig}"
        k = int(m.group(3))
        if k < finished_min:
            return f"wrong: only {k} finished, expected at least {finished_min}"
        if k and r.out.count("\n") < k:
            return f"loss: {k} finished but stdout does not list them"
        return None
    return check


def lab_json_interrupted(sig: str) -> Check:
    def check(r: Ran) -> str | None:
        try:
            doc = json.loads(r.out)
        except ValueError as exc:
            return f"loss: stdout is not one JSON document after the signal ({exc})"
        got = (doc.get("interrupted") or {}).get("signal")
        if got != sig:
            return f"wrong: JSON interrupted.signal {got!r}, expected {sig}"
        return None
    return check


def resumed_exact(r: Ran) -> str | None:
    """The train scripts print: 'first run: exit N', 'resume: exit N', RESUME-EXACT."""
    if r.memo.get("ref") is None:
        return f"setup: {r.memo.get('ref_error') or 'no reference run'}"
    if "TIMING" in r.text:
        return "signal: " + _markers(r, "TIMING")[0]
    m = re.search(r"^resume: exit (\d+)", r.out, re.M)
    if not m:
        return "loss: the resume never ran (see output)"
    if m.group(1) != "0":
        line = next((ln for ln in reversed(r.text.splitlines())
                     if "resume" not in ln and ln.strip()), "")
        return f"loss: --resume after the signal exited {m.group(1)}: {line[:200]}"
    if "RESUME-EXACT" not in r.out:
        d = _markers(r, "RESUME-DIFFERS")
        return "wrong: " + (d[0] if d else "no comparison printed")
    return None


def marker_present(text: str, what: str) -> Check:
    def check(r: Ran) -> str | None:
        return None if text in r.text else f"wrong: {what}"
    return check


def marker_absent(prefix: str, kind: str) -> Check:
    def check(r: Ran) -> str | None:
        lines = _markers(r, prefix)
        return f"{kind}: " + "; ".join(lines[:2]) if lines else None
    return check


# ---------------------------------------------------------------------------------------
# script pieces (str.format placeholders: literal braces doubled)

WAITFOR = r'''
waitfor() {{  # TEXT FILE SECONDS [PID]: until TEXT is in FILE; 1 on timeout or PID gone
  local n=0
  until grep -q -- "$1" "$2" 2>/dev/null; do
    sleep 0.2; n=$((n+1))
    [ $n -ge $(($3*5)) ] && return 1
    [ -n "$4" ] && ! kill -0 "$4" 2>/dev/null && return 1
  done
  return 0
}}
'''

# after the trainer died: its children (DataLoader workers) alive 5 s later are orphans
ORPHAN_PROBE = r'''
( sleep 5; for k in $kids; do
    [ -d /proc/$k ] && ! grep -q '^State:.*Z' /proc/$k/status 2>/dev/null && \
      echo "ORPHAN: pid $k ($(tr '\0' ' ' </proc/$k/cmdline | cut -c1-80))" \
           "alive 5 s after the trainer died"
  done ) &
probe=$!
'''


def train_script(loader: str, sig: signal.Signals, target: str, wait_text: str, delay: float,
                 resume_epochs: int, too_far: str) -> str:
    """Train in the background (own group: ``set -m``), wait for ``wait_text``, send
    ``sig`` to the trainer (``target`` "main") or its group (Ctrl-C at a terminal), then at
    once ``--resume`` to ``resume_epochs`` and compare with the uninterrupted run."""
    kill = "kill -s " + sig.name.removeprefix("SIG") + (" -- -$pid" if target == "group"
                                                         else " $pid")
    # the DataLoader's workers are not persistent: wait until this epoch's exist
    wait_kids = ("n=0; until [ $(pgrep -P $pid | wc -l) -ge 2 ] || [ $n -ge 600 ]; do "
                 "sleep 0.2; n=$((n+1)); done; [ $n -ge 600 ] && echo 'TIMING: no workers'"
                 if loader == "dataloader" else "")
    return WAITFOR + f'''
set -m
opts="--data-root {{data}} {_train_opts(loader)}"
{{sm}} train $opts --epochs 20 --checkpoint-dir ck --metrics-json m1.json > run1.log 2>&1 &
pid=$!
if ! waitfor "{wait_text}" run1.log 900 $pid; then
  echo "TIMING: never saw '{wait_text}'"; cat run1.log; kill -9 $pid; exit 90
fi
{wait_kids}
sleep {delay}
kids=$(pgrep -P $pid | tr '\\n' ' ')
{kill}
exec 3>&2 2>/dev/null; wait $pid; rc1=$?; set +m; exec 2>&3  # (no job-control chatter)
''' + ORPHAN_PROBE + f'''
echo "first run: exit $rc1 (children were: $kids)"
cat run1.log
grep -q "{too_far}" run1.log && echo "TIMING: the signal landed after '{too_far}'"
{{sm}} train $opts --epochs {resume_epochs} --checkpoint-dir ck --resume \\
    --metrics-json m2.json > run2.log 2>&1
rc2=$?
echo "resume: exit $rc2"
cat run2.log
ref=$(cat ref)
[ $rc2 -eq 0 ] && [ -n "$ref" ] && \\
  {{py}} compare.py ck/last.pt "$ref/ck/last.pt" m2.json "$ref/m.json"
wait $probe
exit $rc1
'''


def train_case(cid: str, loader: str, sig: signal.Signals, target: str, code: str,
               note: str) -> Case:
    if loader == "dataloader":
        # epochs take ~30 s here: stop in epoch 2, resume to 2, compare with 2 epochs
        wait_text, delay, epochs, too_far = "epoch 1/20", 2, 2, "epoch 2/20"
    else:
        # epochs take 0.1-2 s: stop after epoch 2, resume to 20, compare with 20
        wait_text, delay, epochs, too_far = "epoch 2/20", 0, 20, "final:"
    return Case(
        id=cid, group=G, exit=code, timeout=1200 if loader == "dataloader" else 600,
        script=train_script(loader, sig, target, wait_text, delay, epochs, too_far),
        setup=with_reference(loader, epochs),
        check=all_of(no_orphan_markers, resumed_exact, no_temporaries), note=note)


# ---------------------------------------------------------------------------------------
# devcheck pitfalls run

def lab_watch(depth: int = 3, delay: float = 1.0, kill: str = "") -> str:
    return f"{{py}} treewatch.py $$ {depth} {delay} PHASE-RUNNING {kill} & "


def pitfall_cases() -> list[Case]:
    cases = []
    one = "{dc} pitfalls run nccl_error --device cpu"
    for name, sig, to, code in _stops({"int-group": "130", "term-main": "143",
                                       "kill-main": "-9,137", "hup-main": "129"}):
        check = no_treewatch_failure if sig == KILL else \
            all_of(no_treewatch_failure, lab_stopped(sig.name))
        cases.append(Case(
            id=f"sig.pitfalls.run.{name}", group=G, exit=code, timeout=240, setup=helpers,
            script=lab_watch() + "exec " + one, signal=(sig, "PHASE-RUNNING"),
            signal_to=to, check=check,
            note=f"{sig.name} while nccl_error's two gloo ranks run"))
    for name, sig, to, code in _stops({"int-group": "130", "term-main": "143",
                                       "kill-main": "-9,137"}):
        check = no_treewatch_failure if sig == KILL else \
            all_of(no_treewatch_failure, lab_stopped(sig.name, finished_min=1))
        cases.append(Case(
            id=f"sig.pitfalls.all.{name}", group=G, exit=code, timeout=400, setup=helpers,
            script=lab_watch(3, 0.5) + "exec {dc} pitfalls run --all --device cpu",
            signal=(sig, "PHASE-RUNNING"), signal_to=to, check=check,
            note=f"{sig.name} during the sweep, in the first phase with workers"))
    cases += [
        Case(id="sig.pitfalls.run.int-json", group=G, exit="130", timeout=240, setup=helpers,
             script=lab_watch() + "exec " + one + " --json",
             signal=(INT, "PHASE-RUNNING"),
             check=all_of(no_treewatch_failure, lab_json_interrupted("SIGINT")),
             note="Ctrl-C with --json: still one JSON document, interrupted.signal"),
        Case(id="sig.pitfalls.run.int-before-zygote", group=G, exit="130", timeout=120,
             script="exec " + one, signal=(INT, 0.8),
             check=lab_stopped("SIGINT"),
             note="Ctrl-C while the zygote still imports torch"),
        Case(id="sig.pitfalls.run.kill-zygote", group=G, exit="1", timeout=240,
             setup=helpers, script=lab_watch(3, 1.0, "1 SIGKILL") + "exec " + one,
             check=all_of(no_treewatch_failure, error_names("nccl_error")),
             note="kill -9 of the lab's zygote mid-phase (an OOM kill): ranks must go too"),
        Case(id="sig.pitfalls.run.kill-phase", group=G, exit="1", timeout=240,
             setup=helpers, script=lab_watch(3, 1.0, "2 SIGKILL") + "exec " + one,
             check=all_of(no_treewatch_failure, error_names("signal 9")),
             note="kill -9 of the phase child: its ranks must go, reported as a crash"),
    ]
    return cases


# ---------------------------------------------------------------------------------------
# devcheck run -- JOB

JOBS = {
    "workers": "{py} job_workers.py",
    "grandchildren": "bash -c 'sleep 300 & sleep 300 & echo job-ready >&2; wait'",
    "setsid": "bash -c '(setsid sleep 300 &); (setsid bash -c \"sleep 300 & wait\" &); "
              "echo job-ready >&2; sleep 300'",
    "closed-stdout": "bash -c 'exec >&-; echo job-ready >&2; sleep 300'",
}


SKIP_RUN = {("grandchildren", "term-main"), ("grandchildren", "hup-main"),
            ("setsid", "hup-main"), ("closed-stdout", "int-group"),
            ("closed-stdout", "hup-main")}


def run_cases() -> list[Case]:
    cases = []
    for job, cmd in JOBS.items():
        for name, sig, to, code in _stops({"int-group": 130, "term-main": 143,
                                           "kill-main": None, "hup-main": 129}):
            if (job, name) in SKIP_RUN:
                continue
            check = run_outputs(code, forwarded=sig.name) if code else None
            cases.append(Case(
                id=f"sig.run.{job}.{name}", group=G,
                exit=str(code) if code else "-9,137", timeout=180, setup=helpers,
                script=f"exec {{dc}} run --no-plot --out o -- {cmd}",
                signal=(sig, "job-ready"), signal_to=to, check=check,
                child_traceback=True,
                note=f"{sig.name} to devcheck run while the job ({job}) runs"))
    cases += [
        Case(id="sig.run.dataloader.kill-main", group=G, exit="-9,137", timeout=240,
             setup=helpers, script="exec {dc} run --no-plot --out o -- {py} job_dataloader.py",
             signal=(KILL, "job-ready"), signal_to="main",
             note="kill -9 of devcheck run while a torch DataLoader with 2 workers runs"),
        Case(id="sig.run.dataloader.int-group", group=G, exit="130", timeout=240,
             setup=helpers, script="exec {dc} run --out o -- {py} job_dataloader.py",
             signal=(INT, "job-ready"), child_traceback=True,
             check=run_outputs(130, plot=True, forwarded="SIGINT"),
             note="Ctrl-C during a torch DataLoader with 2 workers; the plot still drawn"),
        Case(id="sig.run.ignore-term.term-main", group=G, exit="0", timeout=120,
             setup=helpers, signal=(TERM, "job-ready"), signal_to="main",
             script="exec {dc} run --no-plot --out o -- bash -c "
                    "'trap \"\" TERM; echo job-ready >&2; sleep 6; echo job-done >&2'",
             check=all_of(run_outputs(0, forwarded="SIGTERM"),
                          marker_present("job-done", "the job did not run to its end")),
             note="a job ignoring SIGTERM: forwarded, the job finishes, its exit code 0"),
        Case(id="sig.run.ignore-int.three-ctrl-c", group=G, exit="137", timeout=120,
             setup=helpers,
             script=WAITFOR + "{dc} run --no-plot --out o -- bash -c "
                    "'trap \"\" INT; echo job-ready >&2; sleep 300' &\n"
                    "pid=$!\nwaitfor job-ready {tmp}/_stderr 60 $pid || exit 91\n"
                    "for i in 1 2 3; do kill -INT $pid; sleep 0.5; done\nwait $pid",
             check=run_outputs(137, forwarded="SIGINT (3rd: SIGKILL)"),
             note="a job ignoring SIGINT: the third Ctrl-C sends SIGKILL, exit 137"),
        Case(id="sig.run.int-early", group=G, exit="130", timeout=60, setup=helpers,
             script="exec {dc} run --no-plot --out o -- sleep 30", signal=(INT, 0.3),
             check=run_outputs(130),
             note="Ctrl-C 0.3 s after the start (before or just after the job exists)"),
        Case(id="sig.run.json.term-main", group=G, exit="143", timeout=120, setup=helpers,
             script="exec {dc} run --json --no-plot --out o -- {py} job_workers.py",
             signal=(TERM, "job-ready"), signal_to="main", child_traceback=True,
             check=all_of(run_outputs(143), _json_last_line(143)),
             note="SIGTERM with --json: the summary still the last stdout line"),
        Case(id="sig.run.own-stdout-closed.term-main", group=G, exit="143", timeout=120,
             setup=helpers, signal=(TERM, "job-ready"), signal_to="main",
             script="exec {dc} run --json --no-plot --out o -- {py} job_workers.py >&-",
             child_traceback=True, check=run_outputs(143),
             note="devcheck's own stdout closed, --json, then SIGTERM"),
    ]
    return cases


def _json_last_line(code: int) -> Check:
    def check(r: Ran) -> str | None:
        lines = [ln for ln in r.out.splitlines() if ln.strip()]
        try:
            doc = json.loads(lines[-1])
        except (IndexError, ValueError):
            return "loss: the last stdout line is not the JSON summary"
        return None if doc.get("exit_code") == code else \
            f"wrong: JSON exit_code {doc.get('exit_code')}, expected {code}"
    return check


# ---------------------------------------------------------------------------------------
# devcheck dist

def dist_cases() -> list[Case]:
    watch = "{py} treewatch.py $$ 2 1.5 RANKS-RUNNING & "
    launch = "exec {dc} dist --nproc 2 --backend gloo --timeout 120"
    cases = []
    for name, sig, to, code in _stops({"int-group": "130", "term-main": "143",
                                       "kill-main": "-9,137", "hup-main": "129"}):
        cases.append(Case(
            id=f"sig.dist.{name}", group=G, exit=code, timeout=240, setup=helpers,
            script=watch + launch, signal=(sig, "RANKS-RUNNING"), signal_to=to,
            check=no_treewatch_failure,
            note=f"{sig.name} to devcheck dist while torchrun's 2 ranks run"))
    cases.append(Case(
        id="sig.dist.int-preflight", group=G, exit="130", timeout=120,
        script="exec {dc} dist --nproc 2 --backend gloo", signal=(INT, 0.6),
        note="Ctrl-C in the first 0.6 s (imports, preflight)"))
    nn = ("exec {dc} dist --nnodes 2 --nproc 1 --backend gloo --timeout 15 "
          "--rdzv-endpoint 127.0.0.1:{port} --rdzv-id sigaudit{port}")
    cases += [
        Case(id="sig.dist.nnodes2-missing-node", group=G, exit="1", timeout=120,
             script=nn.replace("{port}", "29471"),
             check=all_of(took_at_most(25, kind="hang"), error_names("node rank 1", "--nnodes 2")),
             note="--nnodes 2, no second node: non-zero within timeout+10 s, names it"),
        Case(id="sig.dist.nnodes2.int-group", group=G, exit="130", timeout=120,
             setup=helpers, script="{py} treewatch.py $$ 1 3 AGENT-WAITING & "
                                   + nn.replace("{port}", "29472"),
             signal=(INT, "AGENT-WAITING"), check=no_treewatch_failure,
             note="Ctrl-C while torchrun's agent waits for the missing node"),
        Case(id="sig.dist.nnodes2.kill-main", group=G, exit="-9,137", timeout=120,
             setup=helpers, script="{py} treewatch.py $$ 1 3 AGENT-WAITING & "
                                   + nn.replace("{port}", "29473"),
             signal=(KILL, "AGENT-WAITING"), signal_to="main", check=no_treewatch_failure,
             note="kill -9 of devcheck dist while torchrun's agent waits for a node"),
    ]
    return cases


# ---------------------------------------------------------------------------------------
# softmax train (and under torchrun)

def train_cases() -> list[Case]:
    cases = []
    for loader in ("dataloader", "tensor"):
        for name, sig, to, code in _stops({"int-group": "130", "term-main": "143",
                                           "kill-main": "137"}):
            cases.append(train_case(
                f"sig.train.{loader}.{name}", loader, sig, to, code,
                f"{sig.name} mid-epoch ({loader} loader), then at once --resume: exact"))
    cases.append(train_case("sig.train.tensor.hup-main", "tensor", HUP, "main", "129",
                            "SIGHUP mid-run (terminal closed), then --resume: exact"))
    early = "exec {sm} train --data-root {data} --device cpu --epochs 3 --checkpoint-dir ck"
    for at in (0.3, 2.0, 4.0):
        cases.append(Case(
            id=f"sig.train.int-early-{at:g}s", group=G, exit="130", timeout=120,
            script=early, signal=(INT, at),
            note=f"Ctrl-C {at:g} s after the start (imports, device, data): exit 130"))
    cases.append(Case(
        id="sig.predict.int-pages", group=G, exit="130", timeout=300,
        setup=_checkpoint_first,
        script="(for i in $(seq 1200); do [ -e p-02.png ] && break; sleep 0.1; done; "
               "echo PAGES-WRITING >&2) & "
               "exec {sm} predict --checkpoint ck/last.pt --data-root {data} --device cpu "
               "-n 10000 --out p.png",
        signal=(INT, "PAGES-WRITING"), check=all_of(no_temporaries, _whole_pngs),
        note="Ctrl-C while predict -n 10000 writes its pages: no half page, no temp"))
    torchrun = ("{py} -m torch.distributed.run --standalone --nproc-per-node 2 -m softmax "
                "train --data-root {data} --device cpu --epochs 20 --checkpoint-dir ck")
    cases += [
        Case(id="sig.torchrun.train.int-group", group=G, exit="!0", timeout=400,
             script="exec " + torchrun, signal=(INT, "epoch 2/20"), child_traceback=True,
             note="Ctrl-C to torchrun -m softmax train (2 gloo ranks) mid-epoch"),
        Case(id="sig.torchrun.train.term-main", group=G, exit="!0", timeout=400,
             script="exec " + torchrun, signal=(TERM, "epoch 2/20"), signal_to="main",
             child_traceback=True,
             note="SIGTERM to torchrun's agent mid-epoch (a scheduler's stop)"),
        Case(id="sig.torchrun.train.kill-main", group=G, exit="!0", timeout=400,
             script="exec " + torchrun, signal=(KILL, "epoch 2/20"), signal_to="main",
             child_traceback=True,
             note="kill -9 of torchrun's agent mid-epoch: ranks must not train on"),
    ]
    return cases


def _whole_pngs(r: Ran) -> str | None:
    bad = [p.name for p in r.tmp.glob("p*.png")
           if not p.read_bytes().startswith(b"\x89PNG") or not p.read_bytes().endswith(
               b"IEND\xaeB`\x82")]
    return f"loss: cut PNG pages: {', '.join(sorted(bad)[:4])}" if bad else None


# ---------------------------------------------------------------------------------------
# devcheck doctor, gpus --watch

with_shim = chain(helpers, fake_pynvml())  # the fake NVML: one GPU


# stdin a FIFO this process also holds open for writing: a read never ends, no writer runs
STUCK_STDIN = "mkfifo f && exec 3<>f && exec {dc} explain - <&3 3<&-"


def doctor_cases() -> list[Case]:
    watch = "{py} treewatch.py $$ 1 0.5 PROBE-RUNNING & "
    cases = []
    for name, sig, to, code in _stops({"int-group": "130", "int-main": "130",
                                       "term-main": "143,-15", "kill-main": "-9,137"}):
        cases.append(Case(
            id=f"sig.doctor.{name}", group=G, exit=code, timeout=120, setup=helpers,
            script=watch + "exec {dc} doctor", signal=(sig, "PROBE-RUNNING"), signal_to=to,
            check=no_treewatch_failure,
            note=f"{sig.name} to the doctor while its torch probe child imports torch"))
    cases.append(Case(
        id="sig.doctor.json.int-group", group=G, exit="130", timeout=120, setup=helpers,
        script=watch + "exec {dc} doctor --json", signal=(INT, "PROBE-RUNNING"),
        check=no_treewatch_failure, note="Ctrl-C to doctor --json during the torch probe"))
    cases.append(Case(
        id="sig.explain.int-stdin", group=G, exit="130", timeout=60,
        script=STUCK_STDIN, signal=(INT, 2.0),
        note="Ctrl-C while explain waits on a pipe that never ends"))
    cases.append(Case(
        id="sig.explain.term-stdin", group=G, exit="143,-15", timeout=60,
        script=STUCK_STDIN, signal=(TERM, 2.0), signal_to="main",
        note="SIGTERM while explain waits on a pipe"))
    gw = "PYTHONPATH={tmp}/shim exec {dc} gpus --watch --json -i 0.2"
    for name, sig, to, code in _stops({"int-group": "0", "term-main": "143,-15"}):
        cases.append(Case(
            id=f"sig.gpus.watch.{name}", group=G, exit=code, timeout=60, setup=with_shim,
            script=gw, signal=(sig, '"kind":"gpus"'), signal_to=to,
            check=json_lines(1, count_kind="loss"),
            note=f"{sig.name} to gpus --watch --json (fake NVML, one GPU)"))
    return cases


# ---------------------------------------------------------------------------------------
# concurrency

def conc_cases() -> list[Case]:
    t = "{sm} train --data-root {data} --device cpu"
    cases = [
        Case(id="sig.concurrent.train.same-dir", group=G, exit="0", timeout=400,
             setup=helpers,
             script=WAITFOR + f'''
{t} --epochs 20 --checkpoint-dir ck > a.log 2>&1 &
a=$!
waitfor "epoch 1/20" a.log 300 $a || {{{{ echo "TIMING: first never trained"; exit 90; }}}}
{t} --epochs 3 --checkpoint-dir ck > b.log 2>&1
echo "second: exit $?"; cat b.log
grep -q "pid $a" b.log && echo "NAMES-HOLDER"
wait $a; rc=$?
echo "first: exit $rc"; cat a.log
{t} --epochs 20 --checkpoint-dir ck --resume > c.log 2>&1
echo "check: exit $?"; cat c.log
exit $rc
''',
             check=all_of(marker_present("second: exit 1", "the second trainer did not exit 1"),
                          marker_present("NAMES-HOLDER",
                                         "the refusal does not name the holder's pid"),
                          marker_present("already holds 20 epoch",
                                         "the first run's checkpoint is not a whole 20-epoch "
                                         "one")),
             note="two trainers on one --checkpoint-dir: one refuses naming the pid"),
        Case(id="sig.concurrent.train.stale-lock-kill9", group=G, exit="0", timeout=400,
             setup=helpers,
             script=WAITFOR + f'''
set -m
{t} --epochs 20 --checkpoint-dir ck > a.log 2>&1 &
a=$!
waitfor "epoch 2/20" a.log 300 $a || {{{{ echo "TIMING: never trained"; exit 90; }}}}
kill -9 $a; wait $a
ls ck
exec {t} --epochs 3 --checkpoint-dir ck --resume
''',
             check=error_names("stale lock"),
             note="trainer kill -9'd: the next run takes the stale lock over and says so"),
        Case(id="sig.concurrent.train.stale-lock-dataloader-kill9", group=G, exit="0",
             timeout=600, setup=helpers,
             script=WAITFOR + f'''
set -m
{t} --loader dataloader --workers 2 --epochs 20 --checkpoint-dir ck > a.log 2>&1 &
a=$!
waitfor "epoch 1/20" a.log 500 $a || {{{{ echo "TIMING: never trained"; exit 90; }}}}
n=0; until [ $(pgrep -P $a | wc -l) -ge 2 ] || [ $n -ge 600 ]; do sleep 0.2; n=$((n+1)); done
kids=$(pgrep -P $a | tr '\\n' ' ')
echo "workers: $kids"
kill -9 $a; wait $a 2>/dev/null
''' + ORPHAN_PROBE + f'''
exec {t} --epochs 1 --checkpoint-dir ck
''',
             check=all_of(no_orphan_markers, error_names("stale lock")),
             note="kill -9 with DataLoader workers alive, a new run at once: lock is free"),
        Case(id="sig.concurrent.train.stale-lock-file", group=G, exit="0", timeout=300,
             setup=_fake_lock,
             script=f"exec {t} --epochs 1 --checkpoint-dir ck",
             check=error_names("4194000"),
             note="a lock file naming a dead pid (no flock held): the run goes on, says so"),
        Case(id="sig.concurrent.train.metrics-is-checkpoint", group=G, exit="2",
             timeout=300, setup=_checkpoint_first,
             script=f"exec {t} --epochs 2 --checkpoint-dir ck --resume "
                    "--metrics-json ck/last.pt",
             check=all_of(_unchanged_ck, error_names("--metrics-json", "last.pt")),
             note="--metrics-json is the checkpoint: refused before any work, intact"),
        Case(id="sig.concurrent.train.metrics-symlink-to-checkpoint", group=G, exit="2",
             timeout=300, setup=_checkpoint_first,
             script=f"ln -s ck/last.pt m.json && exec {t} --epochs 2 --checkpoint-dir ck "
                    "--resume --metrics-json m.json",
             check=all_of(_unchanged_ck, error_names("--metrics-json", "m.json")),
             note="--metrics-json a symlink to the checkpoint: refused, checkpoint intact"),
        Case(id="sig.concurrent.train.plot-is-metrics", group=G, exit="2", timeout=300,
             script=f"exec {t} --epochs 1 --checkpoint-dir ck --metrics-json x.png "
                    "--plot x.png",
             check=all_of(error_names("--plot", "x.png"), _nothing_created("ck", "x.png")),
             note="--plot and --metrics-json the same file: refused before any work"),
        Case(id="sig.concurrent.train.metrics-is-lock", group=G, exit="2", timeout=300,
             script=f"exec {t} --epochs 1 --checkpoint-dir ck "
                    "--metrics-json ck/last.pt.lock",
             check=error_names("--metrics-json", "last.pt.lock"),
             note="--metrics-json is the lock file: refused before any work"),
        Case(id="sig.concurrent.run.same-out", group=G, exit="0", timeout=180,
             script='''
{dc} run --out o -- {py} -c "import time; time.sleep(3)" 2> a.err &
a=$!
{dc} run --out o -- {py} -c "import time; time.sleep(4)" 2> b.err &
b=$!
wait $a; ra=$?; wait $b; rb=$?
cat a.err b.err >&2
echo "exits: $ra $rb"
[ $ra -eq 0 ] && [ $rb -eq 0 ]
''',
             check=_same_out_consistent,
             note="two devcheck run --out o at once: both finish, files whole, no temps"),
        Case(id="sig.concurrent.pitfalls.two-runs", group=G, exit="0", timeout=400,
             script='''
{dc} pitfalls run nccl_error --device cpu > a.out 2>&1 &
a=$!
{dc} pitfalls run dist_rendezvous_timeout --device cpu > b.out 2>&1 &
b=$!
{dc} pitfalls run dataloader_shm_exhausted --device cpu > c.out 2>&1
rc=$?
wait $a; ra=$?; wait $b; rb=$?
cat a.out b.out c.out
echo "exits: $ra $rb $rc"
[ $ra -eq 0 ] && [ $rb -eq 0 ] && [ $rc -eq 0 ]
''',
             check=marker_absent("FAILED", "wrong"),
             note="three pitfalls run at once (ports, /dev/shm namespaces): all pass"),
        Case(id="sig.concurrent.pitfalls.two-sweeps", group=G, exit="0", timeout=900,
             exclusive=True,
             script='''
{dc} pitfalls run --all --device cpu --json > a.json 2> a.err &
a=$!
{dc} pitfalls run --all --device cpu --json > b.json 2> b.err
rb=$?
wait $a; ra=$?
cat a.err b.err >&2
{py} -c "import json,sys
for f in ('a.json','b.json'):
    d=json.load(open(f)); print(f, d['summary'])
    for r in d['results']:
        if r['status']=='failed': print('FAILED', f, r['id'], r['reason'][:160])"
echo "exits: $ra $rb"
[ $ra -eq 0 ] && [ $rb -eq 0 ]
''',
             check=marker_absent("FAILED", "wrong"),
             note="two whole sweeps at once: no pitfall fails for the other's sake"),
    ]
    return cases


def _fake_lock(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    (tmp / "ck").mkdir()
    (tmp / "ck" / "last.pt.lock").write_text("4194000 otherhost 2020-01-01T00:00:00\n")


def _checkpoint_first(tmp: Path, env: Env, memo: dict[str, object]) -> None:
    """A real one-epoch checkpoint in ck/, its sha remembered."""
    p = subprocess.run(["bash", "-c", f"{env.sm} train --data-root {env.data} --device cpu "
                        "--epochs 1 --checkpoint-dir ck"], cwd=tmp, capture_output=True,
                       text=True, timeout=600)
    memo["ck"] = sha(tmp / "ck" / "last.pt")
    memo["ck_error"] = "" if p.returncode == 0 else p.stderr[-300:]


def _unchanged_ck(r: Ran) -> str | None:
    if r.memo.get("ck") is None:
        return f"setup: no checkpoint made: {r.memo.get('ck_error')}"
    return None if sha(r.tmp / "ck" / "last.pt") == r.memo["ck"] else \
        "loss: ck/last.pt changed or removed"


def _nothing_created(*names: str) -> Check:
    def check(r: Ran) -> str | None:
        made = [n for n in names if (r.tmp / n).exists()]
        return f"wrong: created before refusing: {', '.join(made)}" if made else None
    return check


def _same_out_consistent(r: Ran) -> str | None:
    d = r.tmp / "o"
    left = [p.name for p in d.iterdir() if ".tmp" in p.name] if d.is_dir() else []
    if left:
        return f"loss: temporaries left in o/: {', '.join(sorted(left))}"
    try:
        lines = [json.loads(x) for x in (d / "timeline.jsonl").read_text().splitlines()]
        summary = json.loads((d / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        return f"loss: o/ files missing or not whole JSON ({exc})"
    starts = [x for x in lines if x.get("kind") == "start"]
    ends = [x for x in lines if x.get("kind") == "end"]
    if len(starts) != 1 or len(ends) != 1:
        return f"wrong: timeline.jsonl mixes runs ({len(starts)} starts, {len(ends)} ends)"
    if abs(float(summary.get("duration_s") or 0) - float(ends[0].get("duration_s") or 0)) > 0.5:
        return "wrong: summary.json and timeline.jsonl come from different runs"
    return None


CASES: list[Case] = (pitfall_cases() + run_cases() + dist_cases() + train_cases()
                     + doctor_cases() + conc_cases())
