#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs `aicd demo`: a good release promoted and a bad one rolled back on
# the embedded stack (Temporal, Git, Prometheus and the demo app, all on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/aicd demo "$@"
