"""``python -m devcheck.pitfalls.lab``: the lab's own processes (started by the parent).

  --serve [--parent PID]                     the zygote (fork mode)
  --once ID PHASE DEVICE [--parent PID]      one phase in this fresh interpreter (spawn mode)
"""

from __future__ import annotations

import json
import sys


def _parent(argv: list[str]) -> tuple[list[str], int | None]:
    """Split off ``--parent PID`` (the process whose death must end this one)."""
    if len(argv) >= 2 and argv[-2] == "--parent" and argv[-1].isdigit():
        return argv[:-2], int(argv[-1])
    return argv, None


def main(argv: list[str]) -> int:
    from devcheck.pitfalls.lab import zygote

    args, parent = _parent(argv)
    if args == ["--serve"]:
        zygote.serve(sys.stdin, sys.stdout, parent)
        return 0
    if args[:1] == ["--once"] and len(args) == 4:
        print(json.dumps(zygote.run_once(args[1], args[2], args[3], parent)))
        return 0
    print("usage: python -m devcheck.pitfalls.lab --serve [--parent PID] | "
          "--once ID PHASE DEVICE [--parent PID]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
