#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: lint, types, then pytest against real
# Temporal, Git and Prometheus on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== setup ($(date -u +%H:%M:%S))"
bash scripts/setup.sh
echo "== ruff ($(date -u +%H:%M:%S))"
.venv/bin/ruff check .
echo "== ruff format"
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy  # the files of [tool.mypy] in pyproject.toml: aicd (its workflows and activities too), worker.py
echo "== pytest ($(date -u +%H:%M:%S))"
# -n 2: two workers share the 2 cores well, as most tests wait on Temporal, Git and Prometheus (the slow ones
# start first: tests/conftest.py). --durations: where CI's time goes, for whoever keeps the run under 30 minutes.
.venv/bin/pytest -q -p no:cacheprovider -n 2 --dist worksteal --durations=25 "$@"
