#!/usr/bin/env bash
# One device call: train run A (the model to ship) and run B (the same config and seed: the reproducibility twin)
# side by side on one GPU, then pack each run's model folder, metrics.csv, config and log into $OUT.
#
# Runs from the repository root with the kit that scripts/build-devcarry.sh made in .devcarry/ (nibabel's wheel, the
# template files, the build machine's data manifest). It builds the training + validation data from the template
# on the machine's cores (prepare-mni152 --no-test), says whether every file matches the build machine's, trains,
# prints progress every 20 s, ends both runs by DEADLINE_S (a run past it is stopped, its log still comes back)
# and always writes what it has: run-A.tar.gz, run-B.tar.gz, A.log, B.log, prepare.log, data-check.json.
#   bash .devcarry/train-gpu.sh                       # the GPU call
#   OUT=/tmp/out bash .devcarry/train-gpu.sh --set loop.epochs=1 ...   # a CPU rehearsal with overrides
set -uo pipefail
KIT=${KIT:-.devcarry}
CONFIG=${CONFIG:-train/configs/brain-tissue-synth.yaml}
LIMIT_MIN=${LIMIT_MIN:-6.5}     # the trainer's own safety net: the schedule ends on the clock (card: time_limited)
DEADLINE_S=${DEADLINE_S:-450}   # hard stop for both runs, counted from this script's start
THREADS=${THREADS:-6}           # CPU threads per run (two runs on a 16-core machine)
JOBS=${JOBS:-$(nproc)}          # worker processes building the data
OUT=${OUT:?set OUT to the folder that comes back}
RUNS=${RUNS:-/tmp/runs}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONDONTWRITEBYTECODE=1
started=$(date +%s)
elapsed() { echo $(($(date +%s) - started)); }
say() { echo "[$(elapsed) s] $*"; }

mkdir -p "$OUT" "$RUNS"
if compgen -G "$KIT/whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$KIT"/whl/*.whl || { say "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
python3 -c 'import torch, nibabel; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else "", "nibabel", nibabel.__version__)'
rm -rf "$RUNS/A" "$RUNS/B" "$RUNS/data"
say "building the training + validation data with $JOBS workers"
python3 -m train prepare-mni152 --out "$RUNS/data" --source "$KIT/template" --no-test --jobs "$JOBS" \
  >"$OUT/prepare.log" 2>&1 || { tail -n 20 "$OUT/prepare.log"; say "data build failed"; exit 1; }
tail -n 1 "$OUT/prepare.log"
python3 - "$RUNS/data" "$KIT/manifest.json" "$OUT/data-check.json" <<'EOF'
import json, sys
from pathlib import Path

from train.provenance import sha256_of

data, manifest = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
differ = sorted(name for name, digest in manifest.items() if sha256_of(data / name) != digest)
Path(sys.argv[3]).write_text(json.dumps({"files": len(manifest), "differ": differ}, indent=1))
print(f"data: {len(manifest) - len(differ)} of {len(manifest)} files identical to the build machine's", differ[:5])
EOF
say "data ready"
declare -A pids

for run in A B; do
  python3 -m train fit --config "$CONFIG" --out "$RUNS/$run" --no-progress \
    --set "data.root=$RUNS/data" --set "loop.time_limit_min=$LIMIT_MIN" --set "loop.num_threads=$THREADS" \
    "$@" >"$OUT/$run.log" 2>&1 &
  pids[$run]=$!
  say "run $run started (pid ${pids[$run]})"
done

alive() { kill -0 "${pids[A]}" 2>/dev/null || kill -0 "${pids[B]}" 2>/dev/null; }
while alive; do
  sleep 5
  if (($(elapsed) % 20 < 5)); then
    for run in A B; do say "$run: $(grep -E 'epoch [0-9]+:|Error|error' "$OUT/$run.log" | tail -n 1 | cut -c1-220)"; done
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  fi
  if (($(elapsed) > DEADLINE_S)); then
    say "deadline: stopping the runs still going"
    for run in A B; do kill "${pids[$run]}" 2>/dev/null; done
    sleep 3
    break
  fi
done
for run in A B; do
  wait "${pids[$run]}"
  status=$?
  say "run $run exit status $status"
  folder="$RUNS/$run"
  cp "$OUT/$run.log" "$folder/train.log" 2>/dev/null
  members=()
  for item in model metrics.csv config.yaml train.log; do [ -e "$folder/$item" ] && members+=("$item"); done
  tar -czf "$OUT/run-$run.tar.gz" -C "$folder" "${members[@]}"
  say "run-$run.tar.gz: ${members[*]} ($(du -h "$OUT/run-$run.tar.gz" | cut -f1))"
  [ -f "$folder/model/model.yaml" ] && python3 - "$folder/model/model.yaml" <<'EOF'
import sys, yaml
training = yaml.safe_load(open(sys.argv[1]))["training"]
keys = ("epochs_run", "best_epoch", "steps_run", "stopped_early", "time_limited", "minutes", "device", "validation")
print({key: training.get(key) for key in keys})
EOF
done
say "done"
