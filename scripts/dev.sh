#!/usr/bin/env bash
# One entry point for a fresh clone: set up .venv/ (once, or again when pyproject.toml
# changes), install the Fashion-MNIST mirror where the system allows, then run a task.
#
#   bash scripts/dev.sh doctor [ARGS...]   # devcheck doctor
#   bash scripts/dev.sh test [PYTEST ARGS...]
#   bash scripts/dev.sh setup             # only the set-up
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

task=${1:-doctor}
[ $# -gt 0 ] && shift

say() { printf '[dev.sh] %s\n' "$*" >&2; }

pick_python() {
  for py in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10 python; do
    [ -n "$py" ] || continue
    command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  say "no Python 3.10 or newer found (set PYTHON=/path/to/python3.10+)"; return 1
}

setup_venv() {
  if [ ! -x .venv/bin/python ]; then
    py=$(pick_python)
    say "creating .venv with $($py --version 2>&1)"
    "$py" -m venv .venv
  fi
  stamp=.venv/.devcheck-install-stamp
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing devcheck and its dependencies into .venv (torch is large: this takes a while once)"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
  fi
}

setup_data() {
  # The trainer and the real-data tests read Debian's mirror of the four original files.
  local mirror=/usr/share/datasets/fashion-mnist
  [ -f "$mirror/train-images-idx3-ubyte.gz" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's dataset-fashion-mnist (the Fashion-MNIST mirror)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
           { apt-get update -q >/dev/null 2>&1 &&
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; }; then
      say "could not install dataset-fashion-mnist; real-data tests will skip (see README: Data)"
    fi
  else
    say "no Fashion-MNIST mirror at $mirror and no root apt-get: real-data tests will skip (see README: Data)"
  fi
}

setup_venv
setup_data

case "$task" in
  setup) say "set-up done" ;;
  doctor) exec .venv/bin/devcheck doctor "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  *) say "unknown task '$task' (expected: doctor, test, setup)"; exit 2 ;;
esac
