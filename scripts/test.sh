#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: lint, types, then pytest against real
# Temporal, Git and Prometheus on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
# `ruff format` is enforced on these paths; widen the list as files are formatted, until it is the whole tree.
FORMATTED=(
  activities/drivers/__init__.py
  activities/drivers/base.py
  activities/sync.py
  aicd/client.py
  aicd/dev/__init__.py
  aicd/dev/ports.py
  aicd/dev/processes.py
  aicd/errors.py
  aicd/kinds.py
  aicd/resources.py
  aicd/spec/durations.py
  aicd/spec/schema.py
  aicd/steps
  aicd/targets
  aicd/testing/__init__.py
  aicd/trailers.py
  aicd/worker.py
  bench/_stack.py
  scripts/codemod_namespace.py
  tests/record_histories.py
  tests/test_kinds.py
  tests/test_replay.py
  tests/test_wheel.py
  worker.py
  workflows/__init__.py
  workflows/notifications.py
)
.venv/bin/ruff format --check "${FORMATTED[@]}"
echo "== mypy"
.venv/bin/mypy  # the files of [tool.mypy] in pyproject.toml: aicd (its workflows and activities too), worker.py
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
