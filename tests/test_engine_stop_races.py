"""A stop (abort, supersede), a pause or a resume that reaches a delivery while it is still starting the
rollouts of a wave must reach every rollout of the wave, also those started after it was accepted. Real Temporal, real Git; a test
interceptor holds the start of some of the wave's rollouts on a durable timer, so the message lands in
between every time (in production the window is one workflow task round trip per target of the wave)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger
from aicd.testing.engine import (
    HoldRollouts,
    commits,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    temporal_env,
    wait_for,
)

__all__ = ["temporal_env"]

SEED = "image:\n  tag: v0\ncanary:\n  weight: 0\n  tag: v0\n"
HELD_S = 4.0  # how long the start of a held target is held


def aicd_steps(gitops: str) -> list[str]:
    return [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]


async def test_an_abort_while_a_wave_is_starting_stops_the_rollouts_started_after_it(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Abort accepted while the wave [a, b, c] is starting (during b's start): a is told; b and c, started
    after the abort was accepted, used to be told nothing and walked their whole canaries (setWeight 10, the
    pause, setWeight 100, promote) after it, committing to Git for a delivery on-call had aborted, the
    delivery `rolling-back` until they were done. Now c is never started and b, told as soon as it is
    started, stops at its next step boundary: nothing of b or c gets past its first step, and Git ends as
    before the delivery."""
    source, revision = make_repo(tmp_path, "source", {"README": "r\n"})
    files = {f"{name}.yaml": SEED for name in "abc"}
    gitops, _seed = make_repo(tmp_path, "gitops", files)
    document = spec_document(
        f"race-{uuid.uuid4().hex[:6]}",
        source,
        gitops,
        {name: {"kind": "git", "path": f"{name}.yaml"} for name in "abc"},
        [
            {
                "name": "production",
                "targets": ["a", "b", "c"],
                "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": "2s"}, {"setWeight": 100}]}},
            }
        ],
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state", [HoldRollouts("b", seconds=HELD_S)]) as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: "a" in s.targets and "b" in s.targets)
        await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "stop it"))
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert result.phase == "aborted"
    steps = aicd_steps(gitops)
    assert not [step for step in steps if step.startswith("production/c/")], steps
    assert not [
        step
        for step in steps
        if step.startswith("production/b/")
        and step.split("/")[-1] != "0-setWeight"
        and step != "production/b/rollback"
    ], steps
    for name in "abc":
        assert show(gitops, "main", f"{name}.yaml") == SEED.rstrip("\n")
    assert "c" not in status.targets or status.targets["c"].commits == []
    assert status.targets["b"].state in ("aborted", "rolled-back"), status.targets["b"]


def three_targets(tmp_path: Path, steps: list[dict[str, Any]]) -> tuple[Any, str]:
    source, revision = make_repo(tmp_path, "source", {"README": "r\n"})
    gitops, _seed = make_repo(tmp_path, "gitops", {f"{name}.yaml": SEED for name in "abc"})
    document = spec_document(
        f"race-{uuid.uuid4().hex[:6]}",
        source,
        gitops,
        {name: {"kind": "git", "path": f"{name}.yaml"} for name in "abc"},
        [{"name": "production", "targets": ["a", "b", "c"], "strategy": {"canary": {"steps": steps}}}],
    )
    return plan_from(document, revision), gitops


async def test_a_pause_and_a_resume_while_a_wave_is_starting_reach_every_rollout(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Stop the line while the wave [a, b, c] is starting (during b's start), resume while c is being started.
    b was started unpaused - its input said so - and walked its canary to the end while the delivery said
    `paused`; c was started paused - the pause was on when its input was made - and the resume, told only to
    the rollouts started by then, never reached it: c stayed paused for good and the delivery never ended (and
    no second resume was accepted: the delivery was no longer paused). Now b stops at its next step boundary
    while paused, and c goes on with the others after the resume: the delivery succeeds."""
    plan, gitops = three_targets(tmp_path, [{"setWeight": 10}, {"pause": "1s"}, {"setWeight": 100}])
    client = temporal_env.client
    holding = [HoldRollouts("b", "c", seconds=HELD_S)]
    async with running_worker(client, tmp_path / "state", holding) as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: "a" in s.targets and "b" in s.targets)
        await send_action(client, plan.delivery_id, "pause", HumanAction("oncall", "alarms"))
        await wait_for(client, plan.delivery_id, lambda s: "c" in s.targets, timeout=HELD_S + 10)
        b_while_paused = [step for step in aicd_steps(gitops) if step.startswith("production/b/")]
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
        try:
            result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), timeout=40)
        except TimeoutError:
            status = await get_status(client, plan.delivery_id)
            raise AssertionError(f"the delivery never ended: {status.targets}") from None
    assert b_while_paused in ([], ["production/b/0-setWeight"]), b_while_paused
    assert result.phase == "succeeded", result.reason
    for name in "abc":
        assert f"production/{name}/promote" in aicd_steps(gitops)
