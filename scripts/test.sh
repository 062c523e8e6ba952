#!/usr/bin/env bash
# Set up everything and run the whole suite: lint, format check, types, and every test tier but gpu (the fast tier,
# slow, browser and container), printing the 15 slowest. Extra arguments go to pytest (a -m replaces "not gpu").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
# Debian packages the tests use, installed when missing: PostgreSQL (the review-storage tests start a throwaway
# cluster of their own, tests/pgcluster.py), dicom3tools (dciodvfy validates the DICOM SEG output) and mricron-data
# (the Colin27 head and its skull-stripped brain, which QC is checked on: tests/train/test_qc_outcomes.py).
missing=()
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
[[ -f /usr/share/mricron/templates/ch2.nii.gz ]] || missing+=(mricron-data)
if ((${#missing[@]})); then
  sudo_cmd=$([[ $(id -u) -eq 0 ]] && echo "" || echo "sudo")
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Two more real full heads: pycortex's demo subject S1, with FreeSurfer surfaces (tests/train/test_surface_head.py),
# and ROBEX's reference head, with its brain mask (tests/train/test_brain_mask.py).
scripts/get-pycortex-s1.sh
scripts/get-robex-head.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -m "not gpu" -n 0 --durations=15 "$@"
