"""gpu-check step: does `devcheck explain` name each CUDA error the lab really produced?

Reads the JSON of `devcheck pitfalls run --all --device cuda --json` (gpu-check's
pitfalls.json), feeds every reproduced error text to `devcheck explain - --json` (the CLI,
as a user would) and checks the pitfall that produced it is the top match (for the new
CUDA pitfalls of issue 10, which must have run: passed, or skipped with the lab's reason)
or among the matches (older pitfalls that share a message with another).
Exit 0 when every text is explained as its own pitfall, 1 otherwise, 2 for a bad file.
Usage: python scripts/explain_cuda_check.py OUT_DIR/pitfalls.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NEW_CUDA = ("cuda_out_of_memory", "cudnn_error", "cublas_error", "illegal_memory_access",
            "nccl_error", "cuda_unknown_error")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/explain_cuda_check.py PITFALLS_JSON", file=sys.stderr)
        return 2
    try:
        results = json.loads(Path(argv[0]).read_text(encoding="utf-8"))["results"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot read {argv[0]}: {exc}; expected the JSON of `devcheck pitfalls run "
              "--all --device cuda --json` (did the pitfalls step run?)", file=sys.stderr)
        return 2
    by_id = {r["id"]: r for r in results}
    bad = 0
    for pid in NEW_CUDA:
        r = by_id.get(pid)
        status = r["status"] if r else "missing"
        print(f"{pid:24} {status:8} {(r or {}).get('reason', '')[:150]}")
        bad += status not in ("passed", "skipped")
    for r in results:
        rep = r.get("reproduce") or {}
        if not rep.get("raised"):
            continue
        text = f"{rep.get('exc_type')}: {rep.get('message', '')}\n{rep.get('traceback', '')}"
        done = subprocess.run([sys.executable, "-m", "devcheck", "explain", "-", "--json",
                               "--no-here"], input=text, capture_output=True, text=True,
                              check=False)
        try:
            matches = json.loads(done.stdout)["matches"]
        except (ValueError, KeyError):
            matches = []
        ids = [m["id"] for m in matches]
        top = ids[0] if ids else None
        # the new pitfalls must come first; an older one sharing its message with another
        # (tensor_to_not_inplace -> mixed_devices) must at least be among the matches
        ok = top == r["id"] if r["id"] in NEW_CUDA else r["id"] in ids
        bad += not ok
        first = (rep.get("message") or "").strip().splitlines()[:1]
        print(f"explain {r['id']:32} -> {top}  {'ok' if ok else 'MISMATCH'}  "
              f"({rep.get('exc_type')}: {first[0][:100] if first else ''})")
    print("all reproduced errors explained as their own pitfall" if not bad else
          f"{bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
