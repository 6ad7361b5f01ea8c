"""A step that cannot move says why: while the GitOps remote refuses every push (a stale lock left by a crashed
git process on the server), the write retries inside its activity and the delivery stays `progressing`; the
status (CLI and dashboard) names the write and what git said, and once the remote takes pushes the delivery
goes on and the line goes away."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from aicd.client import handle_for, send_action
from aicd.dashboard.history import DeliveryDigest
from aicd.dashboard.views import build_view
from aicd.messages import HumanAction
from aicd.status_view import status_text
from aicd.testing.engine import plan_from, running_worker, temporal_env, wait_for
from tests.test_engine_overlap import Repos, document, started_to_first_pause

__all__ = ["temporal_env"]


async def test_a_write_the_remote_keeps_refusing_is_shown_as_retried_with_gits_reason(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    repos = Repos(tmp_path)
    plan = plan_from(
        document(
            repos,
            f"locked-{uuid.uuid4().hex[:6]}",
            steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}],
        ),
        repos.revisions[0],
    )
    client = temporal_env.client
    lock = Path(repos.gitops) / "refs" / "heads" / "main.lock"
    async with running_worker(client, tmp_path / "state") as queue:
        paused = await started_to_first_pause(client, plan, queue)
        assert paused.retrying == []
        lock.write_text("")  # what a git process killed mid-update leaves on the server
        try:
            await send_action(client, plan.delivery_id, "resume", HumanAction("oncall", "go on"))
            stuck = await wait_for(client, plan.delivery_id, lambda s: bool(s.retrying), timeout=60)
            (line,) = stuck.retrying
            assert line.startswith("apply_step of production/a: the GitOps remote refused the push "), line
            assert "; git said last: remote: error: cannot lock ref 'refs/heads/main'" in line, line
            assert stuck.phase == "progressing" and repos.values("a.yaml")["canary"]["weight"] == 10
            assert f"retrying: {line[:60]}" in status_text(stuck, width=400)
            view = build_view(stuck, DeliveryDigest(), {}, {}, now=datetime.now(UTC), commit_template=None)
            assert view.retrying == [line]
        finally:
            lock.unlink(missing_ok=True)
        await wait_for(
            client,
            plan.delivery_id,
            lambda s: "b" in s.targets and s.targets["b"].step_kind == "pause",
            timeout=60,
        )
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall", "go on"))
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded", result.reason
    assert repos.values("a.yaml")["image"]["tag"] == plan.artifact_tag
