#!/usr/bin/env bash
# The one command a GPU runner (or anyone with a GPU) runs: every GPU-facing check of the
# project, a markdown summary naming the card, and the artefacts, in OUT_DIR.
#
#   bash scripts/gpu-check.sh OUT_DIR DATA_DIR
#
# DATA_DIR holds the four Fashion-MNIST .gz archives (it is only read). Needs no internet
# and no install: Python 3.10+ with torch >= 2.3, click, psutil, nvidia-ml-py, pytest,
# matplotlib and tqdm; devcheck and softmax run from this checkout through PYTHONPATH.
#
# Steps: the doctor gate (devcheck doctor --require cuda), doctor's JSON, the GPU tests
# (pytest --only-gpu --devcheck-require cuda), every pitfall on cuda, the trainer and the
# predictor on cuda, the benchmarks that take --device. A failed step is recorded and the
# script goes on; the exit status is 1 when any step failed, 2 on a usage error.
#
# At most 8 files land in OUT_DIR, none in sub-folders: summary.md, steps.log (all output),
# doctor.json, pytest-devcheck.json, junit.xml, pitfalls.json, train-metrics.json,
# predictions.png. Everything else (checkpoints, unpacked data) goes to a temporary folder.
#
# Environment: PYTHON (default python3); GPU_CHECK_BUDGET_S (default 450, so the whole run
# stays under ~8 minutes: a step that would start past it is NOT RUN, which fails the check);
# GPU_CHECK_STEPS (a space-separated subset of: doctor doctor-json tests pitfalls train
# predict run bench; the others are skipped); GPU_CHECK_TESTS (what pytest collects, default
# "tests").
set -uo pipefail

usage() {
  echo "usage: bash scripts/gpu-check.sh OUT_DIR DATA_DIR" >&2
  echo "  DATA_DIR: the folder with the four Fashion-MNIST .gz files, e.g." \
    "/usr/share/datasets/fashion-mnist" >&2
  exit 2
}
[ $# -eq 2 ] || usage
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -d "$2" ]; then
  echo "gpu-check: DATA_DIR '$2' is not a folder; expected the folder holding" \
    "train-images-idx3-ubyte.gz and the three other Fashion-MNIST archives" >&2
  exit 2
fi
mkdir -p "$1" || usage
out=$(cd "$1" && pwd)
data=$(cd "$2" && pwd)

PY=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-450}
selected=" ${GPU_CHECK_STEPS:-doctor doctor-json tests pitfalls train predict run dist bench} "
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export SOFTMAX_MIRROR="$data" SOFTMAX_OFFLINE=1
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$repo" || exit 2

log="$out/steps.log"
: >"$log"
rm -f "$out"/{summary.md,doctor.json,pytest-devcheck.json,junit.xml,pitfalls.json}
rm -f "$out"/{train-metrics.json,predictions.png}
start=$SECONDS
failed=0
rows=()
details=()

# record NAME STATUS SECONDS EXIT ARTEFACT
record() {
  rows+=("| $1 | $2 | $3 | $4 | $5 |")
  case $2 in FAILED* | "timed out"* | "NOT RUN"*) failed=$((failed + 1)) ;; esac
}

# step NAME TIMEOUT_S STDOUT_FILE|- ARTEFACTS -- COMMAND...
# Runs COMMAND under a time limit; its stdout goes to STDOUT_FILE (or the log), stderr to the
# log. ARTEFACTS: space-separated file names in OUT_DIR the step may write ("-": none); the
# summary lists those that exist afterwards.
step() {
  local name=$1 limit=$2 stdout=$3 artefacts=$4
  shift 5
  if [[ $selected != *" ${name%%:*} "* ]]; then  # bench:NAME is selected by "bench"
    record "$name" "skipped (not in GPU_CHECK_STEPS)" 0 - -
    return 0
  fi
  local left=$((budget - (SECONDS - start)))
  if [ "$left" -lt 15 ]; then
    record "$name" "NOT RUN (time budget of ${budget}s spent)" 0 - -
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local part="$work/$name.log" t0=$SECONDS rc
  printf '$ %s\n' "$*" >"$part"
  if [ "$stdout" = - ]; then
    timeout -k 10 "$limit" "$@" >>"$part" 2>&1
  else
    timeout -k 10 "$limit" "$@" >"$stdout" 2>>"$part"
  fi
  rc=$?
  local took=$((SECONDS - t0)) status=passed found="" f
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    status="timed out (${limit}s)"
  elif [ $rc -ne 0 ]; then
    status="FAILED"
  fi
  [ "$stdout" != - ] && [ ! -s "$stdout" ] && rm -f "$stdout"
  for f in $artefacts; do
    [ -s "$out/$f" ] && found="${found:+$found, }$f"
  done
  printf '\n===== %s: %s (exit %s, %ss)\n' "$name" "$status" "$rc" "$took" >>"$log"
  cat "$part" >>"$log"
  record "$name" "$status" "$took" "$rc" "${found:--}"
  details+=("$name")
  return 0
}

skip() {  # skip NAME REASON
  record "$1" "skipped ($2)" 0 - -
}

# ---------------------------------------------------------------- what we are running on
py_version=$("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1 || true)
torch_version=$(timeout 120 "$PY" -c \
  'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1 | tail -n 1)
gpus=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(timeout 30 nvidia-smi --query-gpu=index,name,memory.total,driver_version \
    --format=csv,noheader 2>/dev/null) || gpus=""
fi
if [ -z "$gpus" ]; then  # no nvidia-smi, or it failed: ask NVML through devcheck
  gpus=$(timeout 30 "$PY" -c '
from devcheck.probe import nvml
f = nvml.probe_nvml()
print("\n".join(f"{g.index}, {g.name}, driver {f.driver_version}" for g in f.gpus)
      or f"none (NVML: {f.error})")' 2>&1)
fi
first=$(printf '%s\n' "$gpus" | head -n 1)
case $first in
  "") card="no GPU" ;;
  none*) card="no GPU ${first#none }" ;;
  *) card=$(printf '%s\n' "$first" | cut -d, -f2 | sed 's/^ *//')
     n=$(printf '%s\n' "$gpus" | grep -c .)
     [ "$n" -gt 1 ] && card="$card (1 of $n GPUs)" ;;
esac
missing=""
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
  t10k-labels-idx1-ubyte; do
  [ -f "$data/$f.gz" ] || missing="$missing $f.gz"
done

# ---------------------------------------------------------------- the steps
step doctor 120 - - -- "$PY" -m devcheck doctor --require cuda
step doctor-json 120 "$out/doctor.json" doctor.json -- "$PY" -m devcheck doctor --json

# shellcheck disable=SC2086  # GPU_CHECK_TESTS is a list of words on purpose
step tests 240 - "pytest-devcheck.json junit.xml" -- "$PY" -m pytest \
  -p no:devcheck -p devcheck.integrations.pytest_plugin -p no:cacheprovider \
  --only-gpu --devcheck-require cuda --devcheck-json "$out/pytest-devcheck.json" \
  --junitxml "$out/junit.xml" --continue-on-collection-errors -ra -v ${GPU_CHECK_TESTS:-tests}

step pitfalls 180 "$out/pitfalls.json" pitfalls.json -- \
  "$PY" -m devcheck pitfalls run --all --device cuda --json
# issue 10: the new CUDA reproductions (OOM, cuDNN, cuBLAS, illegal access, NCCL) ran above;
# `devcheck explain` must name each real error text the lab produced as its own pitfall
step pitfalls:explain 90 - - -- "$PY" scripts/explain_cuda_check.py "$out/pitfalls.json"

# torch.distributed on the GPU(s) (issue 12): rendezvous, gloo, then NCCL, busbw per size
step dist 150 - - -- "$PY" -m devcheck dist --backend nccl --timeout 120

if [ -n "$missing" ]; then
  skip train "no dataset: missing in $data:$missing"
  skip predict "no dataset"
  skip run "no dataset"
  skip dist:train "no dataset"
else
  step train 180 - train-metrics.json -- "$PY" -m softmax train --device cuda --epochs 10 \
    --data-root "$work/data" --checkpoint-dir "$work/run" \
    --metrics-json "$out/train-metrics.json"
  # the book's code path on cuda (issue 15): its epoch line shows syncs/step (expect 0.00)
  step train:book 120 - - -- "$PY" -m softmax train --book --device cuda --epochs 1 \
    --data-root "$work/data" --checkpoint-dir "$work/run-book"
  if [ -f "$work/run/last.pt" ]; then
    step predict 90 - predictions.png -- "$PY" -m softmax predict --device cuda \
      --data-root "$work/data" --checkpoint "$work/run/last.pt" --out "$out/predictions.png"
  elif [[ $selected == *" predict "* ]]; then
    skip predict "no checkpoint: the train step did not write $work/run/last.pt"
  else
    skip predict "not in GPU_CHECK_STEPS"
  fi
  # devcheck run on the trainer (issue 11): expect the input_bound verdict for the book's
  # DataLoader and not for the GPU-resident tensors; the summaries end each step's log.
  step run:dataloader 150 - - -- "$PY" -m devcheck run -i 0.1 --no-plot \
    --out "$work/run-dataloader" -- "$PY" -m softmax train --device cuda --loader dataloader \
    --epochs 2 --data-root "$work/data" --checkpoint-dir "$work/run-dl"
  step run:tensor 120 - - -- "$PY" -m devcheck run -i 0.1 --no-plot \
    --out "$work/run-tensor" -- "$PY" -m softmax train --device cuda --loader tensor \
    --epochs 10 --data-root "$work/data" --checkpoint-dir "$work/run-tn"
  # the trainer under torchrun on cuda (issue 12): NCCL, one rank per GPU; a world of 1 on
  # a one-GPU machine still runs the distributed path (NCCL, wrapped model, rank checks)
  ngpu=$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))' 2>/dev/null)
  [[ $ngpu =~ ^[0-9]+$ ]] || ngpu=1
  step dist:train 180 - - -- "$PY" -m torch.distributed.run --standalone \
    --nproc-per-node "$ngpu" -m softmax train --device cuda --epochs 3 \
    --data-root "$work/data" --checkpoint-dir "$work/run-ddp"
fi

# Benchmarks: the scripts that take --device (the others measure CPU-only things), on cuda,
# with the dataset when they take --data-root, shortened where named here to fit the budget.
declare -A bench_extra=([bench_train]="--book-epochs 3 --repeats 3" [bench_predict]="--sizes 3000")
for bench in benchmarks/*.py; do
  [ -f "$bench" ] || continue
  name=$(basename "$bench" .py)
  grep -q '__main__' "$bench" || continue
  if ! grep -Eq "(add_argument|option)\(\s*['\"]--device['\"]" "$bench"; then
    skip "bench:$name" "no --device option: not a GPU benchmark"
    continue
  fi
  args=(--device cuda)
  grep -Eq "(add_argument|option)\(\s*['\"]--data-root['\"]" "$bench" &&
    args+=(--data-root "$work/data")
  # shellcheck disable=SC2206  # the extra options are words on purpose
  [ -n "${bench_extra[$name]:-}" ] && args+=(${bench_extra[$name]})
  step "bench:$name" 150 - - -- "$PY" "$bench" "${args[@]}"
done

# ---------------------------------------------------------------- the summary
total=$((SECONDS - start))
if [ $failed -eq 0 ]; then verdict="all steps passed"; else verdict="$failed step(s) failed"; fi
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit with uncommitted changes"
fi
{
  echo "# GPU check on $card"
  echo
  echo "**$verdict** in ${total}s (budget ${budget}s)."
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); host: $(uname -srm)"
  echo "- commit: $commit; python: $PY ($py_version); torch: $torch_version"
  echo "- GPUs (index, name, memory, driver):"
  printf '%s\n' "$gpus" | sed 's/^/  - /'
  echo "- dataset: $data${missing:+ (missing:$missing)}"
  echo
  echo "| step | status | seconds | exit | artefact |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "All output: steps.log. The first and last lines of each step:"
  for name in "${details[@]}"; do
    echo
    echo "### $name"
    echo
    echo '```text'
    part="$work/$name.log"
    if [ "$(wc -l <"$part")" -gt 20 ]; then  # the command and the headline, then the end
      head -n 4 "$part"
      echo "[...]"
      tail -n 14 "$part" | awk 1  # awk 1: ends the last line
    else
      awk 1 "$part"
    fi
    echo '```'
  done
} >"$out/summary.md"

echo "gpu-check: $verdict on $card; summary: $out/summary.md" >&2
[ $failed -eq 0 ]
