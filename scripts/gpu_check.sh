#!/usr/bin/env bash
# The GPU checks in one short, time-limited call: the tests marked `gpu`, then bench train,
# bench pack, bench collapse and bench attacks on CUDA, and the paper grid priced from the
# rates just measured. Each step has its own time limit; the results are appended, dated and
# with the device named, to RESULTS (default: $OUT/gpu_check.md when OUT is set, else
# gpu_check.md) for BENCHMARKS.md's GPU section.
#
#   scripts/gpu_check.sh [RESULTS]
#
# Runs the project from source (PYTHONPATH=src python3 -m ncrobust); wheels the machine lacks
# (torchattacks, submitit) are installed from .whl/ when that folder is present.
# Environment: PYTHON (default python3), BATCHES (timed batches per bench, default 40),
# STEP_LIMIT (seconds per step, default 150).
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BATCHES=${BATCHES:-40}
STEP_LIMIT=${STEP_LIMIT:-150}
RESULTS=${1:-${OUT:+$OUT/}gpu_check.md}
RATES=$(mktemp -d)/rates.json
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

step() {  # step TITLE LIMIT COMMAND...: run it, append its output (or its timeout) to RESULTS
    local title=$1 limit=$2
    shift 2
    echo "### $title" >>"$RESULTS"
    echo '```' >>"$RESULTS"
    echo "\$ $*" >>"$RESULTS"
    timeout "$limit" "$@" 2>&1 | tee -a "$RESULTS"
    local status=${PIPESTATUS[0]}
    [ "$status" = 124 ] && echo "(stopped at the ${limit}s limit)" | tee -a "$RESULTS"
    echo "(exit status $status)" >>"$RESULTS"
    echo '```' >>"$RESULTS"
}

{
    echo
    echo "## GPU check $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/device: /'
    $PYTHON -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
} >>"$RESULTS"

step "tests marked gpu" 240 $PYTHON -m pytest -q -p no:cacheprovider -m gpu tests
step "bench train" "$STEP_LIMIT" $PYTHON -m ncrobust bench train --device cuda --batches "$BATCHES" --write-rates "$RATES"
step "bench pack" "$STEP_LIMIT" $PYTHON -m ncrobust bench pack --device cuda --batches "$BATCHES" --write-rates "$RATES"
step "bench collapse" 90 $PYTHON -m ncrobust bench collapse --device cuda
step "bench attacks" 90 $PYTHON -m ncrobust bench attacks --device cuda
[ -f "$RATES" ] && step "paper grid priced" 30 $PYTHON -m ncrobust sweep --grid paper --dry-run --rates "$RATES"
echo "results appended to $RESULTS"
