"""The hostile audit (issue 9): run every case, judge it, write a table.

    python scripts/hostile_audit.py                 # all cases, 2 at a time (~15 min here)
    python scripts/hostile_audit.py --only train.   # cases whose id contains "train."
    python scripts/hostile_audit.py --list

Needs the venv (``python3 scripts/dev.py setup``) and Fashion-MNIST (``--data``, default
./data or $SOFTMAX_DATA_ROOT). Writes ``results.jsonl`` and ``AUDIT.md`` under ``--out``
(default runs/audit-<time>/) and prints one line per case; exit 1 when any case found a
traceback, an orphan, a hang, a wrong exit, a silent failure or a lost or wrong output.
Some cases mount a tiny tmpfs (a full disk) or a read-only one in a private mount
namespace (``unshare -m``) and drop root with ``setpriv``: run it as root in a scratch VM
or container; cases that cannot set themselves up say so in their result.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit.harness import REPO, Case, Env, Result, python, run_case  # noqa: E402

GROUPS = ("cases_options", "cases_env", "cases_signals", "cases_files")


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for name in GROUPS:
        cases += importlib.import_module(f"audit.{name}").CASES
    ids = [c.id for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"duplicate case ids: {sorted(dupes)}")
    return cases


def table(results: list[Result]) -> str:
    lines = ["| case | group | exit | s | result | last line of output |",
             "|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r.group, r.id)):
        verdict = "ok" if r.ok else "**" + "; ".join(r.problems) + "**"
        msg = r.message.replace("|", "\\|").replace("`", "'")
        lines.append(f"| `{r.id}` | {r.group} | {r.rc} | {r.seconds:g} | {verdict} | {msg} |")
    return "\n".join(lines) + "\n"


def counts(results: list[Result]) -> dict[str, int]:
    kinds = ("traceback", "orphan", "hang", "exit", "silent", "loss", "wrong", "message",
             "signal", "check crashed", "setup")
    out = {"cases": len(results), "ok": sum(r.ok for r in results)}
    for k in kinds:
        out[k] = sum(any(p.startswith(k) for p in r.problems) for r in results)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[],
                    help="run cases whose id contains this text (repeatable)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--data", default=os.environ.get("SOFTMAX_DATA_ROOT") or str(REPO / "data"))
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    # Started with `&` or nohup, SIGINT is ignored and every child would inherit that (the
    # Ctrl-C cases would all "hang"); a Python handler resets to the default across exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cases = load_cases()
    if args.only:
        cases = [c for c in cases if any(o in c.id for o in args.only)]
    if args.list:
        for c in cases:
            print(f"{c.id:45} {c.group:18} {c.note or c.script[:70]}")
        print(f"{len(cases)} cases")
        return 0
    out = args.out or REPO / "runs" / f"audit-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    dc = str(Path(python()).with_name("devcheck"))
    env = Env(py=python(), dc=dc, data=str(Path(args.data).resolve()))
    results: list[Result] = []
    t0 = time.monotonic()

    def one(case: Case) -> Result:
        r = run_case(case, env, out / "cases")
        status = "ok  " if r.ok else "FAIL"
        print(f"{status} {r.id:45} rc={r.rc} {r.seconds:6.1f}s  "
              f"{'; '.join(r.problems) if r.problems else r.message[:90]}", flush=True)
        return r

    parallel = [c for c in cases if not c.exclusive]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results += list(pool.map(one, parallel))
    results += [one(c) for c in cases if c.exclusive]
    with open(out / "results.jsonl", "w") as f:
        for r in results:
            f.write(json.dumps(asdict(r)) + "\n")
    c = counts(results)
    summary = ", ".join(f"{k} {v}" for k, v in c.items())
    (out / "AUDIT.md").write_text(
        f"# Hostile audit, {datetime.now():%Y-%m-%d %H:%M}\n\n{summary}\n\n{table(results)}")
    print(f"\n{summary}  ({time.monotonic() - t0:.0f} s; {out / 'AUDIT.md'})")
    return 0 if c["ok"] == c["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
