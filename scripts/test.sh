#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: lint, types, then pytest against real
# Temporal, Git and Prometheus on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy aicd activities workflows worker.py
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
