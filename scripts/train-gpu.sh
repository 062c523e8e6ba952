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
DEADLINE_S=${DEADLINE_S:-470}   # hard stop for both runs, counted from this script's start
# The trainer's own safety net (card: time_limited): its clock starts with fit, after the data build, so the limit
# is what is left before the deadline less the last epoch, the last validation and the export (at most 6.5 min).
LIMIT_CAP_MIN=${LIMIT_CAP_MIN:-6.5}
ENDGAME_S=${ENDGAME_S:-50}
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
DATA=${DATA:-}                   # a rehearsal may name data built earlier; the GPU call builds it
rm -rf "$RUNS/A" "$RUNS/B"
if [ -z "$DATA" ]; then
  DATA=$RUNS/data
  rm -rf "$DATA"
  say "building the training + validation data with $JOBS workers"
  python3 -m train prepare-mni152 --out "$DATA" --source "$KIT/template" --no-test --jobs "$JOBS" \
    >"$OUT/prepare.log" 2>&1 || { tail -n 20 "$OUT/prepare.log"; say "data build failed"; exit 1; }
  tail -n 1 "$OUT/prepare.log"
fi
python3 - "$DATA" "$KIT/manifest.json" "$OUT/data-check.json" <<'EOF'
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

LIMIT_MIN=$(python3 -c "print(round(max(1.0, min($LIMIT_CAP_MIN, ($DEADLINE_S - $(elapsed) - $ENDGAME_S) / 60)), 2))")
say "time_limit_min=$LIMIT_MIN"
for run in A B; do
  python3 -m train fit --config "$CONFIG" --out "$RUNS/$run" --no-progress \
    --set "data.root=$DATA" --set "loop.time_limit_min=$LIMIT_MIN" --set "loop.num_threads=$THREADS" \
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
  if [ ! -d "$folder/model" ] && [ -f "$folder/last_checkpoint.pt" ]; then
    # A run stopped before its export: keep its best validated weights (the checkpoint itself is too big to return).
    python3 - "$folder" <<'EOF' || say "no weights could be salvaged from run $run"
import json, sys
from pathlib import Path

import torch
from safetensors.torch import save_file

folder = Path(sys.argv[1])
state = torch.load(folder / "last_checkpoint.pt", map_location="cpu", weights_only=True)
weights = state["best_state"] or state["model"]
save_file({k: v.contiguous() for k, v in weights.items()}, folder / "salvaged.safetensors")
info = {k: state[k] for k in ("epoch", "step", "best_epoch", "best_metrics", "time_limited")}
(folder / "salvaged.json").write_text(json.dumps({**info, "weights": "best" if state["best_state"] else "last"}))
print("salvaged", info)
EOF
  fi
  members=()
  for item in model metrics.csv config.yaml train.log salvaged.safetensors salvaged.json; do
    [ -e "$folder/$item" ] && members+=("$item")
  done
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
