#!/usr/bin/env bash
# Set up .venv with everything the service needs (with --train, also the training extras; with --dev, everything the
# tests need too), and the review UI's browser viewer (NiiVue, from the npm registry as api/ui/static/package-lock.json
# pins it, into the gitignored api/ui/static/node_modules). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=requirements.txt
if [[ "${1:-}" == "--train" ]]; then
  requirements=requirements-train.txt
elif [[ "${1:-}" == "--dev" ]]; then
  requirements=requirements-dev.txt
  if ! command -v chromium >/dev/null 2>&1; then
    # The browser tests drive Debian's Chromium through playwright (never `playwright install`).
    sudo_cmd=$([[ $(id -u) -eq 0 ]] && echo "" || echo "sudo")
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq chromium >/dev/null
  fi
fi
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r "$requirements"
.venv/bin/python -m pip install -q --no-deps -e .
# npm ci installs exactly the lock; without npm, the same pinned tarball is fetched and checked (sha512) by Python.
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix api/ui/static --omit=optional --no-audit --no-fund --loglevel=error
else
  .venv/bin/python api/ui/bundle.py
fi
