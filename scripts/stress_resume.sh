#!/usr/bin/env bash
# Kill a small digits AT run with SIGKILL at N random moments, resume it each time, and check
# that the finished tables and checkpoints equal those of an uninterrupted run.
#
#   scripts/stress_resume.sh N [WORKDIR]
#
# Half of the kills land inside a file write chosen at random among all the run's writes
# (NCROBUST_FAULT=kill@K, K drawn from the uninterrupted run's write trace); the other half at
# a random time after launch, start-up included. After each kill the run is continued with
# `ncrobust train --resume` (or started again when the kill came before config.yaml existed).
# Then copies of an interrupted run are damaged: a deleted or stale (older) table and a
# checkpoint of another run must be refused, a missing last checkpoint resumed from the kept one.
# Environment: PYTHON (default: python), SEED (default: $RANDOM), EPOCHS (default 2).
set -euo pipefail

N=${1:?usage: stress_resume.sh N [WORKDIR]}
WORK=${2:-$(mktemp -d)}
PYTHON=${PYTHON:-python}
SEED=${SEED:-$RANDOM}
EPOCHS=${EPOCHS:-2}
RANDOM=$SEED
ARGS=(--dataset digits --model small_cnn --mode at --norm linf --eps 0.15 --alpha 0.1
      --steps 1 --epochs "$EPOCHS" --measure-every 1 --checkpoint-every 1 --views clean,pgd
      --device cpu --seed 1 --quiet)
train() { "$PYTHON" -m ncrobust.cli train "$@" >/dev/null 2>>"$WORK/stderr.txt"; }

mkdir -p "$WORK"
echo "stress_resume: $N kills, seed $SEED, work in $WORK"
start=$(date +%s%N)
NCROBUST_WRITE_TRACE="$WORK/trace.txt" train "${ARGS[@]}" --out "$WORK/reference"
duration_ms=$((($(date +%s%N) - start) / 1000000))
writes=$(wc -l < "$WORK/trace.txt")
echo "reference run: $((duration_ms / 1000)) s, $writes file writes"

RUN="$WORK/killed"
command_for_run() {  # CMD: start the killed run, or continue it once config.yaml exists
  if [ -f "$RUN/config.yaml" ]; then
    CMD=("$PYTHON" -m ncrobust.cli train --resume "$RUN" --quiet)
  else
    CMD=("$PYTHON" -m ncrobust.cli train "${ARGS[@]}" --out "$RUN")
  fi
}
compare() {  # the finished killed run against the reference; fails the script if not equal
  "$PYTHON" - "$WORK/reference" "$RUN" <<'PY'
import sys
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file

from ncrobust.runs.directory import RunDirectory

reference, killed = (RunDirectory(Path(p)) for p in sys.argv[1:])
timings = {"seconds", "measure_seconds"}


def table(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[~frame["metric"].isin(timings)] if "metric" in frame else frame
    keys = [c for c in frame.columns if c != "value"]
    return frame.sort_values(keys).reset_index(drop=True)


assert killed.is_complete(), "the killed run did not finish"
pd.testing.assert_frame_equal(table(reference.read_metrics()), table(killed.read_metrics()))
pd.testing.assert_frame_equal(table(reference.read_stats()), table(killed.read_stats()))
names = sorted(p.name for p in reference.checkpoint_dir.iterdir())
assert names == sorted(p.name for p in killed.checkpoint_dir.iterdir()), "checkpoint files differ"
for name in names:
    a, b = (load_file(str(r.checkpoint_dir / name)) for r in (reference, killed))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), f"{name} differs"
leftovers = [p for p in Path(sys.argv[2]).rglob(".*.tmp")]
assert not leftovers, f"temporary files left: {leftovers}"
print(f"identical: {len(reference.read_metrics())} metric rows, {len(names)} checkpoints")
PY
  compared=$((compared + 1))
}
kills=0
compared=0
for ((i = 1; i <= N; i++)); do
  if [ -f "$RUN/DONE" ]; then
    compare
    rm -rf "$RUN"  # finished between kills: compared, then a new run for the next kill
  fi
  command_for_run
  span=1  # a resumed process has about half a run left: aim inside it
  [ "${CMD[4]}" = "--resume" ] && span=2
  set +e
  if ((i % 2 == 1)); then
    index=$((1 + RANDOM % (writes / span)))
    how="during file write $index"
    { NCROBUST_FAULT="kill@$index" "${CMD[@]}" >/dev/null 2>>"$WORK/stderr.txt"; } 2>/dev/null
    status=$?  # the braces keep bash's own "Killed" notice off the terminal
  else
    delay_ms=$((duration_ms / span * RANDOM / 32768))
    delay=$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))
    how="after $delay s"
    "${CMD[@]}" >/dev/null 2>>"$WORK/stderr.txt" &
    pid=$!  # the Python process itself (a simple command, forked and exec'd)
    sleep "$delay"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    status=$?
  fi
  set -e
  if ((status == 137)); then
    kills=$((kills + 1))
    echo "kill $i: SIGKILL $how"
  else
    echo "kill $i: the process ended first ($how, exit $status)"
  fi
done
command_for_run
"${CMD[@]}" >/dev/null 2>>"$WORK/stderr.txt"
compare

damage() {  # RUN := a copy of the reference interrupted after its next-to-last epoch, then $1
  RUN="$WORK/damaged-$1"
  rm -rf "$RUN"
  cp -r "$WORK/reference" "$RUN"
  "$PYTHON" - "$RUN" "$1" <<'PY'
import shutil
import sys
from pathlib import Path

from ncrobust.runs.checkpoint import LAST, epoch_name, load_checkpoint, restore, save_checkpoint
from ncrobust.runs.directory import RunDirectory

run, how = RunDirectory(Path(sys.argv[1])), sys.argv[2]
epoch = load_checkpoint(run.checkpoint_dir / LAST).epoch - 1  # interrupted after this epoch
run.done_path.unlink()
run.truncate_after(epoch)
(run.checkpoint_dir / LAST).unlink()
for kept in run.checkpoint_dir.glob("epoch-*.safetensors"):
    if int(kept.stem.split("-")[1]) > epoch:
        kept.unlink()
shutil.copyfile(run.checkpoint_dir / epoch_name(epoch), run.checkpoint_dir / LAST)
if how == "deleted-stats":
    run.stats_path.unlink()
elif how in ("stale-stats", "stale-metrics"):  # an older copy: the last epoch's rows are gone
    path = run.stats_path if how == "stale-stats" else run.metrics_path
    frame = run.read_stats() if how == "stale-stats" else run.read_metrics()
    frame[frame.epoch < epoch].to_parquet(path)
elif how == "missing-last":
    (run.checkpoint_dir / LAST).unlink()
elif how == "foreign-checkpoint":  # the same model and data, written by another run
    from ncrobust.models import create_model

    mine = load_checkpoint(run.checkpoint_dir / LAST)
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    restore(mine, model)
    other = {**mine.identity, "run_id": "another-run"}
    save_checkpoint(run.checkpoint_dir / LAST, model, None, mine.epoch, mine.metadata, other)
PY
}
for how in deleted-stats stale-stats stale-metrics foreign-checkpoint; do
  damage "$how"
  set +e
  message=$("$PYTHON" -m ncrobust.cli train --resume "$RUN" --quiet 2>&1 >/dev/null)
  status=$?
  set -e
  if ((status != 2)) || [ -f "$RUN/DONE" ]; then
    echo "damage $how: resumed (exit $status) instead of refusing"
    exit 1
  fi
  echo "damage $how: refused: ${message#*error: }"
done
damage missing-last
"$PYTHON" -m ncrobust.cli train --resume "$RUN" --quiet >/dev/null 2>>"$WORK/stderr.txt"
compare
echo "damage missing-last: resumed from the kept checkpoint"
echo "stress_resume: $kills SIGKILLs, $compared resumed runs identical to the uninterrupted one"
