"""Determinism: recorded histories (tests/record_histories.py: approval gates, pause and resume, `pause: {}`,
abort with release-scope rollback; Slack notifications; an edge fleet continued as new; a target through two
stages rolled back once; the audit stream as local activities; stops, pauses and resumes while a wave is starting;
a rollout keeping its ownership base per file; an Argo CD fleet syncing a restored site back; a fleet failing
with the sites it moved; a terminated fleet's sites all synced back; a fleet or a target's rollout with a bug in
its code) and fresh runs of the same scenarios must replay on the current workflow code without a
nondeterminism error."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from aicd.testing.engine import temporal_env
from aicd.workflows.delivery import (
    AUDIT_DRAIN_WITHOUT_TIMER,
    LOCAL_ACTIVITIES,
    PAUSE_LATE_ROLLOUTS,
    STOP_LATE_ROLLOUTS,
    SYNC_FLEET_BACK,
    SYNC_FLEET_WITHOUT_RESULT,
)
from aicd.workflows.edge_fleet import BUG_IN_RESULT, FAILURE_IN_RESULT, SYNC_RESTORED_SITES
from aicd.workflows.registry import ALL_WORKFLOWS, sandbox_runner
from aicd.workflows.rollout_control import PER_FILE_BASE, PROGRESS_IN_RESULT
from aicd.workflows.target_rollout import ROLLOUT_BUG_IN_RESULT
from tests.record_histories import (
    HISTORY_DIR,
    REPLAY_INTERCEPTORS,
    SCENARIOS,
    activity_types,
    patch_markers,
    record_scenario,
)

__all__ = ["temporal_env"]


def replayer(scenario: str) -> Replayer:
    return Replayer(
        workflows=ALL_WORKFLOWS,
        workflow_runner=sandbox_runner(),
        interceptors=REPLAY_INTERCEPTORS.get(scenario, ()),
    )


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_recorded_histories_replay(scenario: str) -> None:
    files = sorted((HISTORY_DIR / scenario).glob("*.json"))
    assert files, f"no recorded histories for {scenario}; run python -m tests.record_histories {scenario}"
    for path in files:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = await replayer(scenario).replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{scenario}/{path.name}: {result.replay_failure}"


async def test_notify_history_holds_notifications() -> None:
    """The `notify` scenario guards the delivery's notification commands: its history must hold them."""
    text = (HISTORY_DIR / "notify" / "delivery.json").read_text()
    assert text.count('"name": "notify"') >= 5


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_fresh_run_replays(temporal_env: WorkflowEnvironment, tmp_path: Path, scenario: str) -> None:
    histories = await record_scenario(temporal_env.client, tmp_path, scenario)
    assert histories[0].events[-1].event_type == 2  # EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    for history in histories:
        await replayer(scenario).replay_workflow(history)


async def test_host_history_sends_later_commands_and_the_gate_to_the_build_worker() -> None:
    """The `host` scenario guards the host-queue commands: after the build, every command and gate check
    was scheduled on the build worker's own queue."""
    history = json.loads((HISTORY_DIR / "host" / "delivery.json").read_text())
    queues = [
        (attributes["activityType"]["name"], attributes["taskQueue"]["name"])
        for event in history["events"]
        if (attributes := event.get("activityTaskScheduledEventAttributes"))
        and attributes["activityType"]["name"] in ("run_command", "check_gates")
    ]
    assert [name for name, _ in queues] == ["run_command"] * 4 + ["check_gates"]
    assert "-host-" not in queues[0][1] and all("-host-" in queue for _, queue in queues[1:]), queues


async def test_governance_history_holds_the_gate_commands() -> None:
    """The `governance` scenario guards the gate, override, audit and incident commands: its history holds them."""
    text = (HISTORY_DIR / "governance" / "delivery.json").read_text()
    for name in ("check_gates", "override", "audit_append", "send_incident"):
        assert f'"name": "{name}"' in text, name


async def test_audit_history_sends_the_audit_stream_and_the_claim_as_local_activities() -> None:
    """The `audit` scenario guards LOCAL_ACTIVITIES: every batch of the audit stream and the release claim are
    local activities (markers in the history), none an activity task through the server; the older
    `governance` history keeps its activity tasks and replays as it ran (test_recorded_histories_replay)."""
    events = _events("audit", "delivery")
    scheduled, local = activity_types(events)
    assert "audit_append" not in scheduled and "claim_release" not in scheduled, scheduled
    assert "check_gates" in scheduled, scheduled
    assert local.count("audit_append") >= 4 and local.count("claim_release") == 1, local
    assert any(LOCAL_ACTIVITIES.encode() in patch for patch in patch_markers(events))
    older, older_local = activity_types(_events("governance", "delivery"))
    assert "audit_append" in older and "claim_release" in older and not older_local


async def test_fleet_rollback_syncs_the_sites_the_fleet_moved_back_under_its_patch() -> None:
    """The `fleet-rollback` scenarios guard SYNC_FLEET_BACK: recorded before it, the rollback of an argocd fleet
    only commits (and that history still replays, test_recorded_histories_replay); after it, the delivery checks
    the two sites the fleet's first batch moved - its result names them - at the rollback commit."""
    before = _events("fleet-rollback", "delivery")
    after = _events("fleet-rollback-synced", "delivery")
    assert activity_types(before)[0] == ["check_gates", "gitops_rollback_many"]
    assert activity_types(after)[0] == ["check_gates", "gitops_rollback_many", "edge_check_sites"]
    assert not any(SYNC_FLEET_BACK.encode() in patch for patch in patch_markers(before))
    assert any(SYNC_FLEET_BACK.encode() in patch for patch in patch_markers(after))
    (request,) = _activity_inputs(after, "edge_check_sites")
    assert [site["name"] for site in request["sites"]] == ["pop-1", "pop-2"]
    assert request["step"] == "edge/pops/rollback"


async def test_a_failing_fleet_names_its_moved_sites_in_its_result_under_its_patch() -> None:
    """The `fleet-failure` scenarios guard FAILURE_IN_RESULT: recorded before it, the fleet whose activities were
    refused failed as a workflow and the delivery's rollback only committed (that history still replays,
    test_recorded_histories_replay); after it, the fleet ends failed with a result naming the sites it moved,
    and the delivery checks them - a slice of the fleet file - at the rollback commit."""
    before, after = _events("fleet-failure", "pops"), _events("fleet-failure-in-result", "pops")
    assert "workflowExecutionFailedEventAttributes" in before[-1]
    assert "workflowExecutionCompletedEventAttributes" in after[-1]
    assert not any(FAILURE_IN_RESULT.encode() in patch for patch in patch_markers(before))
    assert any(FAILURE_IN_RESULT.encode() in patch for patch in patch_markers(after))
    assert activity_types(_events("fleet-failure", "delivery"))[0] == ["check_gates", "gitops_rollback_many"]
    delivery = _events("fleet-failure-in-result", "delivery")
    assert activity_types(delivery)[0] == ["check_gates", "gitops_rollback_many", "edge_check_sites"]
    (request,) = _activity_inputs(delivery, "edge_check_sites")
    assert (request["fleet_sites"]["start"], request["fleet_sites"]["end"]) == (0, 2)
    assert request["step"] == "edge/pops/rollback"


async def test_a_fleet_ended_without_a_result_has_every_site_synced_back_under_its_patch() -> None:
    """The `fleet-terminated` scenarios guard SYNC_FLEET_WITHOUT_RESULT: recorded before it, the rollback of the
    terminated fleet only committed (that history still replays, test_recorded_histories_replay); after it, the
    delivery checks every site of the fleet at the rollback commit."""
    before, after = _events("fleet-terminated", "delivery"), _events("fleet-terminated-synced", "delivery")
    assert "workflowExecutionTerminatedEventAttributes" in _events("fleet-terminated-synced", "pops")[-1]
    assert activity_types(before)[0] == ["check_gates", "gitops_rollback_many"]
    assert activity_types(after)[0] == ["check_gates", "gitops_rollback_many", "edge_check_sites"]
    assert not any(SYNC_FLEET_WITHOUT_RESULT.encode() in patch for patch in patch_markers(before))
    assert any(SYNC_FLEET_WITHOUT_RESULT.encode() in patch for patch in patch_markers(after))
    (request,) = _activity_inputs(after, "edge_check_sites")
    assert [site["name"] for site in request["sites"]] == ["pop-1", "pop-2", "pop-3", "pop-4"]


async def test_a_fleet_with_a_bug_names_its_moved_sites_in_its_result_under_its_patch() -> None:
    """The `fleet-bug` scenarios guard BUG_IN_RESULT: recorded before it, the fleet whose code raised a plain
    exception failed its workflow task until it was terminated, and the delivery's rollback synced every site
    (that history, its failed tasks included, still replays: test_recorded_histories_replay); after it, the
    fleet ends failed with a result naming the two sites it moved, and the delivery checks only those at the
    rollback commit."""
    before, after = _events("fleet-bug", "pops-run2"), _events("fleet-bug-in-result", "pops-run2")
    assert "workflowTaskFailedEventAttributes" in before[-2]
    assert "workflowExecutionTerminatedEventAttributes" in before[-1]
    assert not any("workflowTaskFailedEventAttributes" in event for event in after)
    assert "workflowExecutionCompletedEventAttributes" in after[-1]
    assert not any(BUG_IN_RESULT.encode() in patch for patch in patch_markers(before))
    assert any(BUG_IN_RESULT.encode() in patch for patch in patch_markers(after))
    (every,) = _activity_inputs(_events("fleet-bug", "delivery"), "edge_check_sites")
    assert [site["name"] for site in every["sites"]] == ["pop-1", "pop-2", "pop-3", "pop-4"]
    (moved,) = _activity_inputs(_events("fleet-bug-in-result", "delivery"), "edge_check_sites")
    assert [site["name"] for site in moved["sites"]] == ["pop-1", "pop-2"]
    assert moved["step"] == "edge/pops/rollback"


async def test_a_rollout_with_a_bug_names_its_commits_in_its_result_under_its_patch() -> None:
    """The `rollout-bug` scenarios guard ROLLOUT_BUG_IN_RESULT: recorded before it, the rollout whose code raised
    a plain exception as it scheduled its second step failed its workflow task until it was terminated (that
    history, its failed tasks included, still replays: test_recorded_histories_replay); after it, the rollout
    ends failed with a result naming the commit of its first step, and the delivery rolls the target back."""
    before, after = _events("rollout-bug", "a"), _events("rollout-bug-in-result", "a")
    assert "workflowTaskFailedEventAttributes" in before[-2]
    assert "workflowExecutionTerminatedEventAttributes" in before[-1]
    assert not any("workflowTaskFailedEventAttributes" in event for event in after)
    assert not any(ROLLOUT_BUG_IN_RESULT.encode() in patch for patch in patch_markers(before))
    assert any(ROLLOUT_BUG_IN_RESULT.encode() in patch for patch in patch_markers(after))
    (step,) = _activity_inputs(after, "apply_step")
    completed = after[-1]["workflowExecutionCompletedEventAttributes"]
    result = json.loads(base64.b64decode(completed["result"]["payloads"][0]["data"]))
    assert result["outcome"] == "failed" and "the rollout failed on a bug" in result["reason"], result
    assert len(result["commits"]) == 1 and result["status"]["commits"] == result["commits"], result
    assert step["commit"]["step"] == "one/a/0-setWeight"
    for scenario in ("rollout-bug", "rollout-bug-in-result"):
        scheduled, _ = activity_types(_events(scenario, "delivery"))
        assert scheduled == ["check_gates", "gitops_rollback_many", "sync_target"], (scenario, scheduled)


def _activity_inputs(events: list[dict[str, Any]], activity_type: str) -> list[Any]:
    """The (first) argument of each activity of this type a history (as JSON) scheduled, decoded."""
    return [
        json.loads(base64.b64decode(attributes["input"]["payloads"][0]["data"]))
        for event in events
        if (attributes := event.get("activityTaskScheduledEventAttributes"))
        and attributes["activityType"]["name"] == activity_type
    ]


def _events(scenario: str, name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((HISTORY_DIR / scenario / f"{name}.json").read_text())["events"]
    return events


def _progress_signals(scenario: str, name: str) -> int:
    return sum(
        1
        for event in _events(scenario, name)
        if "signalExternalWorkflowExecutionInitiatedEventAttributes" in event
    )


async def test_progress_history_reports_waits_and_ends_with_the_status_in_the_result() -> None:
    """The `progress` scenario guards PROGRESS_IN_RESULT: the same delivery as `gates`, whose rollouts no longer
    report after every step; the final status travels in the result."""
    for name in ("a", "b"):
        events = _events("progress", name)
        assert any(PROGRESS_IN_RESULT.encode() in patch for patch in patch_markers(events)), name
        (completed,) = [e for e in events if "workflowExecutionCompletedEventAttributes" in e]
        payload = completed["workflowExecutionCompletedEventAttributes"]["result"]["payloads"][0]["data"]
        result = json.loads(base64.b64decode(payload))
        assert (
            result["status"]["state"] == result["outcome"]
            and result["status"]["commits"] == result["commits"]
        )
        assert _progress_signals("progress", name) < _progress_signals("gates", name), name


@pytest.mark.parametrize(
    ("scenario", "name", "patch"),
    [
        ("abort-while-starting", "delivery", STOP_LATE_ROLLOUTS),
        ("pause-while-starting", "delivery", PAUSE_LATE_ROLLOUTS),
        ("per-file-base", "b", PER_FILE_BASE),
        ("argocd-fleet-restore", "pops", SYNC_RESTORED_SITES),
        ("audit-drain", "delivery", AUDIT_DRAIN_WITHOUT_TIMER),
    ],
)
async def test_histories_recorded_through_a_patch_hold_its_marker(
    scenario: str, name: str, patch: str
) -> None:
    """Each of these scenarios guards the new branch of one workflow patch: its history went through it."""
    assert any(patch.encode() in data for data in patch_markers(_events(scenario, name))), (scenario, name)


async def test_abort_while_starting_history_never_starts_the_last_rollout() -> None:
    """The abort was accepted during b's start: the delivery started a and b, never c."""
    started = [
        event["startChildWorkflowExecutionInitiatedEventAttributes"]["workflowId"].rsplit("--", 1)[-1]
        for event in _events("abort-while-starting", "delivery")
        if "startChildWorkflowExecutionInitiatedEventAttributes" in event
    ]
    assert started == ["a", "b"], started


async def test_argocd_fleet_restore_history_syncs_the_restored_site() -> None:
    """The batch's sites are synced to its commit; the failed site, restored in Git, is synced again, to the
    restore commit."""
    scheduled, _ = activity_types(_events("argocd-fleet-restore", "pops"))
    assert scheduled == ["gitops_commit", "edge_check_sites", "gitops_rollback", "edge_check_sites"], (
        scheduled
    )
