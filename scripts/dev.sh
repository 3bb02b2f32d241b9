#!/usr/bin/env bash
# Kept for old habits and scripts: the set-up lives in scripts/dev.py, which runs the same in
# bash and PowerShell. This finds a Python 3.10+ and hands it every argument.
#
#   bash scripts/dev.sh doctor [ARGS...]   ==  python3 scripts/dev.py doctor [ARGS...]
#   bash scripts/dev.sh test [PYTEST ARGS...]
#   bash scripts/dev.sh setup
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for py in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10 python; do
  [ -n "$py" ] || continue
  command -v "$py" >/dev/null 2>&1 || continue
  if "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    exec "$py" scripts/dev.py "$@"
  fi
done
echo "[dev.sh] no Python 3.10 or newer found; expected python3 on PATH. Fix: install it, or set PYTHON=/path/to/python3.10+" >&2
exit 2
