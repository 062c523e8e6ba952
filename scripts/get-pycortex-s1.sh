#!/usr/bin/env bash
# pycortex's demo subject S1, a real full head with FreeSurfer's pial and white-matter surfaces (`python -m train surface-head`,
# train/surface_head.py): the five files that check reads, taken from the pycortex 1.4.0 source archive on PyPI
# (70 MB, fetched once) into DIR (default data/pycortex-S1), and checked against their sha256. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-data/pycortex-S1}
files=(anatomicals/raw.nii.gz surfaces/pia_lh.gii surfaces/pia_rh.gii surfaces/wm_lh.gii surfaces/wm_rh.gii)
sums="1a480d10e8c07fbca58e069efce2a11d477e180beb43f88bdad825b750055a28  anatomicals/raw.nii.gz
63cd7317ed7be61ac632fa8f1b80a0272601f9b22ad7bf954116138496d23d57  surfaces/pia_lh.gii
127c4b4a4df29adcb438f9c46e76d0f433f80e9c94e4b84dfafb0e11e4e6d356  surfaces/pia_rh.gii
194da2de9a0617314d34b791f5476e2789b62329a9a2d4f020346a76ae3fe936  surfaces/wm_lh.gii
c53c5b9306140a5baa212b3056d4cae7317d55277e6ffa15ee9a3a7287e01c02  surfaces/wm_rh.gii"
check() { (cd "$out" 2>/dev/null && sha256sum --check --quiet --status <<<"$sums"); }
check && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip download --quiet --no-deps --dest "$tmp" pycortex==1.4.0
tar -xzf "$tmp"/pycortex-1.4.0.tar.gz -C "$tmp" "${files[@]/#/pycortex-1.4.0/filestore/db/S1/}"
for f in "${files[@]}"; do
  mkdir -p "$out/$(dirname "$f")"
  cp "$tmp/pycortex-1.4.0/filestore/db/S1/$f" "$out/$f"
done
check || { echo "get-pycortex-s1: $out does not match the recorded sha256 sums" >&2; exit 1; }
