"""Deterministic orchestration only: no I/O here. Every side effect is an activity in `activities/`.

The worker's list of workflows and their sandbox are in :mod:`aicd.workflows.registry`; this file stays empty
because the sandbox runs it again for every workflow run."""
