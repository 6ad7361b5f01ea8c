"""Determinism: recorded histories (pause, resume, approval, `pause: {}`, abort with release-scope rollback)
and a fresh run must replay on the current workflow code without a nondeterminism error."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.helpers_engine import temporal_env
from tests.record_histories import HISTORY_DIR, record_scenario
from workflows import ALL_WORKFLOWS, sandbox_runner

__all__ = ["temporal_env"]


def replayer() -> Replayer:
    return Replayer(workflows=ALL_WORKFLOWS, workflow_runner=sandbox_runner())


async def test_recorded_histories_replay() -> None:
    files = sorted(HISTORY_DIR.glob("*.json"))
    assert len(files) >= 3, "recorded histories are missing; run python -m tests.record_histories"
    histories = [WorkflowHistory.from_json(path.stem, path.read_text()) for path in files]
    for path, history in zip(files, histories, strict=True):
        result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


async def test_fresh_run_replays(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    histories = await record_scenario(temporal_env.client, tmp_path)
    assert histories[0].events[-1].event_type == 2  # EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    for history in histories:
        await replayer().replay_workflow(history)
