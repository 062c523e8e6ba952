#!/usr/bin/env bash
# Build .devcarry/ (gitignored): what scripts/train-gpu.sh needs on a GPU machine that has torch, numpy, scipy,
# scikit-image, safetensors, pyyaml and huggingface_hub but neither nibabel, nilearn nor a network:
#   .devcarry/whl/                nibabel's wheel (pure Python), installed there with pip --no-index
#   .devcarry/template/           nilearn's three MNI152 files (+ ORIGIN, naming the package they came from)
#   .devcarry/manifest.json       sha256 of every file `fit` reads in this machine's data/mni152, to compare with
#                                 the copy the GPU machine builds from the template (prepare-mni152 --no-test)
#   .devcarry/train-gpu.sh        the device script
# The prepared data itself (heads, noisy validation volumes: ~70 MB) is over the 64 MiB a call may carry beside the
# working tree, so the GPU machine builds it in ~20-30 s on its cores. Then:
#   run(command="OUT=$OUT bash .devcarry/train-gpu.sh", carry=[".devcarry"], timeout_s=...)
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.devcarry
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/mni152}
mkdir -p "$KIT"
git check-ignore -q "$KIT" || { echo "$KIT is not gitignored: it must never be committed" >&2; exit 1; }
[ -f "$DATA/heads/canvas_t1.nii.gz" ] || "$PY" -m train prepare-mni152 --out "$DATA"
rm -rf "$KIT"
mkdir -p "$KIT/whl" "$KIT/template"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$KIT/whl" "nibabel==$("$PY" -c 'import nibabel; print(nibabel.__version__)')"
"$PY" - "$DATA" "$KIT" <<'PY'
import json, shutil, sys
from pathlib import Path

from train.mni152 import FILES, ORIGIN_NOTE, template_dir, template_source
from train.provenance import sha256_of

data, kit = Path(sys.argv[1]), Path(sys.argv[2])
for name in FILES.values():
    shutil.copy2(template_dir() / name, kit / "template" / name)
(kit / "template" / ORIGIN_NOTE).write_text(template_source()["origin"] + " (copied)\n", encoding="utf-8")
dataset = json.loads((data / "dataset.json").read_text())
files = list(dataset["heads"]["canvas"].values()) + [e["tissues"] for e in dataset["heads"]["training"]]
files += [e[key] for e in dataset["training"] + dataset["validation"] for key in ("image", "label")]
(kit / "manifest.json").write_text(json.dumps({name: sha256_of(data / name) for name in files}, indent=1))
print(f"manifest of {len(files)} files")
PY
cp scripts/train-gpu.sh "$KIT/"
du -sh "$KIT"/* "$KIT"
