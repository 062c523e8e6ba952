#!/usr/bin/env bash
# Set up everything and run the whole suite: lint, format check, types, and every test tier but gpu (the fast tier,
# slow, browser and container), printing the 15 slowest. Extra arguments go to pytest (a -m replaces "not gpu").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -m "not gpu" --durations=15 "$@"
