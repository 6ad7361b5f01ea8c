"""Human control of a running delivery: pause stops a timed pause's clock, abort restores files byte for
byte, an approval timeout ends rejected without a commit."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from aicd.client import ActionRefused, get_status, handle_for, send_action, start_delivery
from aicd.messages import DeliveryStatus, HumanAction, Trigger
from aicd.testing.engine import (
    TEST_SERVER_BIN,
    assert_replays,
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

SEED = "# staging values\nimage:\n  tag: v0   # stable\nextra: {keep: true}\n"


def one_target_spec(tmp_path: Path, steps: list, **extra: object) -> tuple[dict, str, str]:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED, "other/file.yaml": "a: 1\n"})
    document = spec_document(
        "web",
        source,
        gitops,
        {"web": {"kind": "git", "path": "apps/web/values.yaml"}},
        [{"name": "staging", "targets": ["web"], "strategy": {"canary": {"steps": steps}}}],
        **extra,
    )
    return document, gitops, revision


async def test_pause_stops_the_clock_of_a_timed_pause(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    document, gitops, revision = one_target_spec(
        tmp_path, [{"setWeight": 50}, {"pause": "4s"}, {"setWeight": 100}]
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        waiting = await wait_for(
            client,
            plan.delivery_id,
            lambda s: "web" in s.targets and s.targets["web"].wait_until != "",
        )
        # When the timed pause would end with a running clock, by the workflow's own clock.
        would_end = datetime.fromisoformat(waiting.targets["web"].wait_until).timestamp()
        await asyncio.sleep(1.0)
        await send_action(client, plan.delivery_id, "pause", HumanAction("oncall", "investigating"))
        try:
            await send_action(client, plan.delivery_id, "pause", HumanAction("oncall"))
            raise AssertionError("a second pause was accepted")
        except ActionRefused as refused:
            assert "already paused" in str(refused)
        await asyncio.sleep(4.5)  # longer than the whole pause: with a running clock it would have ended
        status = await get_status(client, plan.delivery_id)
        assert status.phase == "paused" and status.targets["web"].step_index == 1
        assert len([c for c in commits(gitops) if "Aicd-Step" in c]) == 1
        resumed = time.monotonic()
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
        await wait_for(client, plan.delivery_id, lambda s: s.targets["web"].step_index == 2)
        step_two_at = time.monotonic()
        step_two_wall = time.time()
        result = await handle_for(client, plan.delivery_id).result()
        final = await get_status(client, plan.delivery_id)
    assert result.phase == "succeeded"
    # Paused after ~1 s of a 4 s pause: about 3 s were left when resumed.
    assert step_two_at - resumed >= 2.0, step_two_at - resumed
    # The clock stood still while the delivery was paused: more than the 4.5 s slept between pause and resume.
    assert step_two_wall - would_end >= 4.5, step_two_wall - would_end
    assert [(a.kind, a.actor, a.reason) for a in final.actions] == [
        ("pause", "oncall", "investigating"),
        ("resume", "oncall", ""),
    ]
    step_two = [c for c in commits(gitops) if c.get("Aicd-Step") == "staging/web/2-setWeight"]
    assert step_two[0]["Aicd-Actor"] == "oncall"  # the resume caused this commit


async def test_pause_then_abort_restores_files_byte_for_byte(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    document, gitops, revision = one_target_spec(
        tmp_path, [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(
            client,
            plan.delivery_id,
            lambda s: "web" in s.targets and s.targets["web"].state == "awaiting-resume",
        )
        assert "weight: 10" in show(gitops, "main", "apps/web/values.yaml")
        await send_action(client, plan.delivery_id, "pause", HumanAction("oncall", "bad smell"))
        await send_action(client, plan.delivery_id, "abort", HumanAction("carol", "customer errors"))
        try:
            await send_action(client, plan.delivery_id, "abort", HumanAction("carol"))
            raise AssertionError("a second abort was accepted")
        except ActionRefused:
            pass
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert result.phase == "aborted" and "customer errors" in result.reason
    assert show(gitops, "main", "apps/web/values.yaml") == SEED.rstrip(
        "\n"
    )  # git show strips the final newline
    raw = (
        __import__("subprocess")
        .run(
            ["git", "--git-dir", gitops, "show", "main:apps/web/values.yaml"], capture_output=True, check=True
        )
        .stdout
    )
    assert raw == SEED.encode()
    log = commits(gitops)
    assert log[-1]["Aicd-Step"] == "staging/web/rollback" and log[-1]["Aicd-Actor"] == "carol"
    assert status.targets["web"].state == "rolled-back"
    try:
        await send_action(client, plan.delivery_id, "resume", HumanAction("x"))
        raise AssertionError("resume of a finished delivery was accepted")
    except ActionRefused:
        pass


async def test_approval_timeout_ends_rejected_without_commit(tmp_path: Path) -> None:
    document, gitops, revision = one_target_spec(tmp_path, [{"setWeight": 100}])
    document["spec"]["stages"][0]["approval"] = {"approvers": ["alice"], "timeout": "24h"}
    plan = plan_from(document, revision)
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=TEST_SERVER_BIN
    ) as env:
        async with running_worker(env.client, tmp_path / "state") as queue:
            await start_delivery(
                env.client, plan, Trigger("cli", "t"), queue=queue, index_search_attributes=False
            )
            await env.sleep(timedelta(hours=23))
            assert (await get_status(env.client, plan.delivery_id)).phase == "awaiting-approval"
            await env.sleep(timedelta(hours=2))
            result = await handle_for(env.client, plan.delivery_id).result()
    assert result.phase == "rejected" and "not approved within 24h" in result.reason
    assert [c for c in commits(gitops) if "Aicd-Step" in c] == []


async def test_reject_ends_rejected_and_validators_refuse_nonsense(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    document, gitops, revision = one_target_spec(tmp_path, [{"setWeight": 100}])
    document["spec"]["stages"][0]["approval"] = {"approvers": ["alice"], "timeout": "1h"}
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        for kind, action, why in (
            ("resume", HumanAction("alice"), "not paused"),
            ("approve", HumanAction("alice", stage="nope"), "not awaiting approval"),
        ):
            await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "staging")
            try:
                await send_action(client, plan.delivery_id, kind, action)
                raise AssertionError(f"{kind} was accepted")
            except ActionRefused as refused:
                assert why in str(refused)
        await send_action(client, plan.delivery_id, "reject", HumanAction("alice", "not today"))
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "rejected" and "not today" in result.reason
    assert [c for c in commits(gitops) if "Aicd-Step" in c] == []


async def test_release_scope_abort_of_a_target_in_two_stages_reports_its_rollback(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A target may go through several stages (a canary stage, then a full one). Aborted with scope release, it
    is rolled back once - one commit restores its file to before the delivery - and its status says so, not
    "nothing to roll back" from a second request for the same file."""
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED})
    stages = [
        {"name": "canary", "targets": ["web"], "strategy": {"canary": {"steps": [{"setWeight": 10}]}}},
        {"name": "full", "targets": ["web"], "strategy": {"canary": {"steps": [{"pause": {}}]}}},
    ]
    targets = {"web": {"kind": "git", "path": "apps/web/values.yaml"}}
    document = spec_document("web", source, gitops, targets, stages, rollback={"scope": "release"})
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(
            client,
            plan.delivery_id,
            lambda s: (
                s.stage == "full" and "web" in s.targets and s.targets["web"].state == "awaiting-resume"
            ),
        )
        await send_action(client, plan.delivery_id, "abort", HumanAction("carol", "customer errors"))
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert result.phase == "aborted"
    assert show(gitops, "main", "apps/web/values.yaml") == SEED.rstrip("\n")
    rollbacks = [entry for entry in commits(gitops) if entry.get("Aicd-Step", "").endswith("/rollback")]
    assert [entry["Aicd-Step"] for entry in rollbacks] == ["full/web/rollback"]
    web = status.targets["web"]
    assert web.state == "rolled-back" and web.message == "rolled back: customer errors", web.message
    assert rollbacks[0]["sha"] in web.commits


async def test_commits_a_person_caused_name_the_person_and_the_identity_used(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """spec.people: the Aicd-Actor trailer of the commit an approval, a resume and an abort caused names
    Alice, and the identity and channel she acted through; an undeclared identity stays itself."""
    wait = {"pause": {}}
    steps = [{"setWeight": 10}, wait, {"setWeight": 20}, wait, {"setWeight": 50}, wait, {"setWeight": 100}]
    alice = {"slack": "U0ALICE", "dashboard": "alice@example.com", "cli": "alice"}
    document, gitops, revision = one_target_spec(tmp_path, steps, people={"alice": alice})
    document["spec"]["stages"][0]["approval"] = {"approvers": ["alice", "oncall"], "timeout": "1h"}
    plan = plan_from(document, revision)
    client = temporal_env.client

    def waiting_at(index: int) -> Callable[[DeliveryStatus], bool]:
        def waiting(status: DeliveryStatus) -> bool:
            target = status.targets.get("web")
            return target is not None and (target.step_index, target.state) == (index, "awaiting-resume")

        return waiting

    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "staging")
        await send_action(client, plan.delivery_id, "approve", HumanAction("U0ALICE", via="slack"))
        await wait_for(client, plan.delivery_id, waiting_at(1))
        await send_action(client, plan.delivery_id, "resume", HumanAction("alice", via="cli"))
        await wait_for(client, plan.delivery_id, waiting_at(3))
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall", via="cli"))
        await wait_for(client, plan.delivery_id, waiting_at(5))
        # An actor that is not one identity would end the commit's trailer block: refused at the door.
        forged = HumanAction("eve\n\nAicd-Delivery-Id: someone-else", via="cli")
        for kind in ("pause", "abort"):
            with pytest.raises(ActionRefused, match="not an identity"):
                await send_action(client, plan.delivery_id, kind, forged)
        # Nor may anyone be recorded as aicd itself, as a Slack user from another channel (the records would
        # read `<@U0CAROL>`), or as alice with an invisible character after her name.
        impostors = [
            (HumanAction("AICD", via="dashboard"), "aicd's own actions"),
            (HumanAction("U0CAROL", via="dashboard"), "only through Slack's signed requests"),
            (HumanAction("alice\u200b", via="cli"), "not an identity"),
        ]
        for impostor, why in impostors:
            with pytest.raises(ActionRefused, match=why):
                await send_action(client, plan.delivery_id, "pause", impostor)
        abort = HumanAction("alice@example.com", via="dashboard")
        await send_action(client, plan.delivery_id, "abort", abort)
        result = await handle_for(client, plan.delivery_id).result()
    actors = {c["Aicd-Step"]: c["Aicd-Actor"] for c in commits(gitops) if "Aicd-Step" in c}
    assert actors == {
        "staging/web/0-setWeight": "alice (as U0ALICE via slack)",  # the approval that opened the stage
        "staging/web/2-setWeight": "alice (via cli)",  # her resume released the `pause: {}` before it
        "staging/web/4-setWeight": "oncall",  # no person declares oncall
        "staging/web/rollback": "alice (as alice@example.com via dashboard)",
    }
    assert result.phase == "aborted"
    assert result.reason == "aborted by alice (as alice@example.com via dashboard)"


def _sleeper(pid_file: Path) -> list[str]:
    """A test command that writes its pid, then runs for 5 minutes."""
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)"
    return [sys.executable, "-c", code, str(pid_file)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _gone(pid: int, within: float = 90.0) -> bool:
    """Whether the process ends within `within` seconds (the worker learns of a cancel from a heartbeat)."""
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return not _alive(pid)


def _test_commands_cancelled(history: Any, names: set[str]) -> list[str]:
    """The tests (run_command activities, by their command's name) whose cancel the delivery requested before
    it completed; fails on a command issued after the completion."""
    scheduled: dict[int, str] = {}
    cancelled: list[str] = []
    completed = False
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            request = json.loads(attributes.input.payloads[0].data)
            if request["name"] in names:
                scheduled[event.event_id] = request["name"]
        elif event.HasField("activity_task_cancel_requested_event_attributes"):
            assert not completed, "a cancel was requested after the delivery completed"
            name = scheduled.get(event.activity_task_cancel_requested_event_attributes.scheduled_event_id)
            if name:
                cancelled.append(name)
        elif event.HasField("workflow_execution_completed_event_attributes"):
            completed = True
        assert not event.HasField("workflow_task_failed_event_attributes"), event
    return sorted(cancelled)


def _with_tests(tmp_path: Path, tests: list[dict[str, Any]]) -> tuple[Any, str]:
    """A delivery that builds, runs `tests`, then sets weight 100; (plan, its GitOps repo)."""
    document, gitops, revision = one_target_spec(
        tmp_path,
        [{"setWeight": 100}],
        build={"command": ["true"], "artifact": "r.example/web:v2"},
        test=tests,
    )
    return plan_from(document, revision), gitops


async def test_an_abort_during_the_tests_cancels_every_test_command(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Each test runs in its own abortable wait inside the tests' one. The outer wait woke first on an abort and
    cancelled the gather, which left the tests' command activities running: their processes ran on after the
    delivery had ended aborted (until a heartbeat found it closed)."""
    pids = [tmp_path / "unit.pid", tmp_path / "e2e.pid"]
    tests = [{"name": path.stem, "command": _sleeper(path)} for path in pids]
    plan, gitops = _with_tests(tmp_path, tests)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: all(path.exists() for path in pids), timeout=60)
        running = [int(path.read_text()) for path in pids]
        await send_action(client, plan.delivery_id, "abort", HumanAction("carol", "bad build"))
        result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), 120)
        status = await get_status(client, plan.delivery_id)
        history = await client.get_workflow_handle(plan.delivery_id).fetch_history()
        gone = [await _gone(pid) for pid in running]
        await assert_replays(client, [plan.delivery_id])
    assert result.phase == "aborted", result.reason
    assert _test_commands_cancelled(history, {"unit", "e2e"}) == ["e2e", "unit"]
    assert gone == [True, True], running
    assert [(c.name, c.state) for c in status.commands] == [
        ("build", "succeeded"),
        ("unit", "cancelled"),
        ("e2e", "cancelled"),
    ]
    assert show(gitops, "main", "apps/web/values.yaml") == SEED.rstrip("\n")


async def test_a_failed_test_cancels_the_tests_still_running(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The tests run in parallel; the first failure fails the delivery. Before, the others ran on to their end
    on a delivery already failed."""
    slow = tmp_path / "slow.pid"
    fails_once_slow_runs = (
        "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)\nsys.exit(3)"
    )
    tests = [
        {"name": "slow", "command": _sleeper(slow)},
        {"name": "broken", "command": [sys.executable, "-c", fails_once_slow_runs, str(slow)]},
    ]
    plan, gitops = _with_tests(tmp_path, tests)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), 120)
        status = await get_status(client, plan.delivery_id)
        history = await client.get_workflow_handle(plan.delivery_id).fetch_history()
        await assert_replays(client, [plan.delivery_id])
    assert result.phase == "failed" and "broken exited with 3" in result.reason, result.reason
    assert _test_commands_cancelled(history, {"slow", "broken"}) == ["slow"]
    assert [(c.name, c.state) for c in status.commands][1:] == [("slow", "cancelled"), ("broken", "failed")]
    assert commits(gitops)[-1].get("Aicd-Step") is None  # nothing was written
