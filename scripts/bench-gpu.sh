#!/usr/bin/env bash
# One device call, at most ~3.5 minutes: issue 18's GPU figures with the shipped model on the MNI152 T1 example.
#   1. bench/gpu.py    one brain end to end (read .nii.gz → mask .nii.gz) per precision, stages, agreement with the
#                      previous host pipeline; the 512×512×400 int16 CT at 0.8×0.8×1 mm          → gpu.json
#   2. bench/cohort.py 32 brains: in-process loop, predict_many, `unet3d predict DIR -o OUT`, GPU utilisation,
#                      equal masks                                                              → cohort.json
#   3. bench/load.py   the HTTP API alone (no Gradio), 8 clients, whole brains, 4 inference slots → load.json
#                      then 1 slot if time is left                                                → load-1slot.json
#   4. bench/io.py     gzip inflate/deflate per library and level                                → io.json
#   5. pytest -m gpu   the real-CUDA out-of-memory fallbacks, if time is left                      → in bench.log
# Every step has its own time limit within the whole budget; each writes its JSON as it ends, so what ran comes
# back whatever happens after. All output goes to $OUT/bench.log; a summary is printed and written (summary.json).
#
# Kit: .devcarry/whl-bench (scripts/build-bench-kit.sh: nibabel, isal, pydicom, FastAPI/uvicorn/SQLAlchemy, httpx,
# pytest). The lead's call:
#   run(command="bash scripts/bench-gpu.sh", carry=[".devcarry"], timeout_s=240)
# A CPU rehearsal (small sizes, any machine; KIT may name a kit built for its Python):
#   SMALL=1 OUT=/tmp/bench-out KIT=/tmp/kit311/whl-bench bash scripts/bench-gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-.devcarry/whl-bench}
OUT=${OUT:?set OUT to the folder that comes back}
SMALL=${SMALL:-0}
BUDGET_S=${BUDGET_S:-205}      # the whole script; the device call adds its start-up around it
SITE=${SITE:-/tmp/site-bench}
STEPS=${STEPS:-gpu cohort load io load-1slot pytest-gpu}   # a rehearsal may run fewer
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONDONTWRITEBYTECODE=1
started=$(date +%s)
mkdir -p "$OUT"
LOG=$OUT/bench.log
say() { echo "[$(($(date +%s) - started)) s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET_S - ($(date +%s) - started))); }

# step NAME SECONDS COMMAND...: run with the smaller of its own limit and what is left (less 10 s for the summary)
step() {
  local name=$1 limit=$2
  shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  local budget=$(($(left) - 10))
  ((budget < limit)) && limit=$budget
  if ((limit < 15)); then
    say "$name: skipped ($(left) s left)"
    return 0
  fi
  say "$name: start (limit ${limit} s)"
  timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
  say "$name: exit $?"
}

if compgen -G "$KIT/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$KIT"/*.whl \
    >>"$LOG" 2>&1 || say "wheel install failed"
  export PYTHONPATH=$SITE:$PWD
else
  export PYTHONPATH=$PWD
fi
python3 - <<'EOF' 2>&1 | tee -a "$LOG"
import torch, nibabel
from unet3d.compression import GZIP_BACKEND
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print("torch", torch.__version__, "gpu", gpu, "nibabel", nibabel.__version__, "gzip", GZIP_BACKEND)
EOF

MODEL=models/unet3d-brain-tissue
BRAIN=api/examples/mni152_t1.nii.gz
if [ "$SMALL" = 1 ]; then  # a rehearsal on a CPU: every step, small
  GPU_ARGS=(--device cpu --repeats 1 --precisions auto fp32 --ct --ct-shape 96 96 64)
  COHORT_ARGS=(--count 4 --device cpu)
  LOAD_ARGS=(--size 48 --inputs 4 --requests 12 --clients 2 --warmup 4)
  LIMITS=(170 200 120 60)
else
  GPU_ARGS=(--repeats 5 --precisions auto bf16 fp32 --ct)
  COHORT_ARGS=(--count 32)
  LOAD_ARGS=(--size 0 --inputs 8 --requests 160 --clients 8 --warmup 16)
  LIMITS=(75 80 60 45)
fi

step gpu "${LIMITS[0]}" python3 bench/gpu.py "$MODEL" "$BRAIN" "${GPU_ARGS[@]}" --json "$OUT/gpu.json"
step cohort "${LIMITS[1]}" python3 bench/cohort.py --model "$MODEL" "${COHORT_ARGS[@]}" --json "$OUT/cohort.json"
step load "${LIMITS[2]}" python3 bench/load.py --no-ui --model "$MODEL" "${LOAD_ARGS[@]}" --max-concurrency 4 \
  --queue-size 16 --json "$OUT/load.json"
step io 20 python3 bench/io.py --repeats 3 --json "$OUT/io.json"
step load-1slot "${LIMITS[3]}" python3 bench/load.py --no-ui --model "$MODEL" "${LOAD_ARGS[@]}" --max-concurrency 1 \
  --queue-size 16 --json "$OUT/load-1slot.json"
if [ "$SMALL" != 1 ]; then
  step pytest-gpu 40 python3 -m pytest -q -p no:cacheprovider -m gpu tests/unet3d/test_out_of_memory_gpu.py
fi

python3 - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def read(name):
    try:
        return json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
gpu, cohort, load, slot1 = read("gpu"), read("cohort"), read("load"), read("load-1slot")
summary = {}
if gpu:
    brain = gpu["brain"]
    summary["brain_ms"] = {k.removeprefix("end_to_end_"): v["median_ms"] for k, v in brain.items() if k.startswith("end_to_end")}
    summary["brain_stages_auto_ms"] = brain.get("end_to_end_auto", {}).get("best_stages_ms")
    summary["mask_agreement"] = brain.get("mask_agreement")
    if "ct" in gpu:
        summary["ct"] = {k: gpu["ct"].get(k) for k in ("median_ms", "best_stages_ms", "mode", "gpu_peak_gib")}
if cohort:
    summary["cohort"] = {
        "loop_vps": cohort["loop"]["volumes_per_s"], "predict_many_vps": cohort["predict_many"]["volumes_per_s"],
        "cli": cohort.get("cli"), "gpu_util_many": cohort["predict_many"].get("gpu_utilisation"),
        "masks_cli_vs_loop": cohort.get("masks_cli_vs_loop"),
    }
for name, result in (("load_4_slots", load), ("load_1_slot", slot1)):
    if result:
        summary[name] = {"rps": result["throughput_rps"], "p95_ms": result["latency_ms"]["p95"],
                         "passed": all(result["passed"].values())}
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary, indent=1))
EOF
say "done"
