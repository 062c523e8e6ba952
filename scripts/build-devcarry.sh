#!/usr/bin/env bash
# Build .devcarry/ (gitignored): what scripts/train-gpu.sh needs on a GPU machine that has torch, numpy, scipy,
# scikit-image, safetensors, pyyaml and huggingface_hub but neither nibabel nor a network:
#   .devcarry/whl/             nibabel's wheel (pure Python), installed there with pip --no-index
#   .devcarry/data/mni152/     the prepared dataset's dataset.json and the files `fit` reads (heads + validation)
#   .devcarry/train-gpu.sh     the device script
# Then: run(command="OUT=$OUT bash .devcarry/train-gpu.sh", carry=[".devcarry"], ...).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.devcarry
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/mni152}
git check-ignore -q "$KIT" || { echo "$KIT is not gitignored: it must never be committed" >&2; exit 1; }
[ -f "$DATA/heads/canvas_t1.nii.gz" ] || "$PY" -m train prepare-mni152 --out "$DATA"
rm -rf "$KIT"
mkdir -p "$KIT/whl" "$KIT/data/mni152"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$KIT/whl" "nibabel==$("$PY" -c 'import nibabel; print(nibabel.__version__)')"
# Only what fit reads, byte for byte (the card lists these files' sha256): dataset.json, the head canvas and the
# training heads, the validation cases. The test cases stay here: evaluation runs on this machine.
"$PY" - "$DATA" "$KIT/data/mni152" <<'EOF'
import json, shutil, sys
from pathlib import Path

source, target = Path(sys.argv[1]), Path(sys.argv[2])
dataset = json.loads((source / "dataset.json").read_text())
files = list(dataset["heads"]["canvas"].values()) + [e["tissues"] for e in dataset["heads"]["training"]]
files += [e[key] for e in dataset["training"] + dataset["validation"] for key in ("image", "label")]
for name in ["dataset.json", *files]:
    (target / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / name, target / name)
print(f"copied {len(files) + 1} files")
EOF
cp scripts/train-gpu.sh "$KIT/"
du -sh "$KIT"/* "$KIT"
