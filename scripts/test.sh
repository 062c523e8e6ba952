#!/usr/bin/env bash
# Set up everything and run the whole suite: lint, format check, types, tests (slow and browser ones included).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
if ! command -v dciodvfy >/dev/null 2>&1; then
  # The DICOM SEG tests validate their output with dicom3tools' dciodvfy (Debian's package).
  sudo_cmd=$([[ $(id -u) -eq 0 ]] && echo "" || echo "sudo")
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq dicom3tools >/dev/null
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
