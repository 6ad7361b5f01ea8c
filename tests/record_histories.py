"""Records the workflow histories the replay test guards, one folder per scenario under tests/histories/:

- `gates`: a delivery with an approval gate, a pause and a resume, a `pause: {}` step, a second stage whose
  target is aborted and rolled back (release scope);
- `notify`: the same delivery with Slack notifications on, so its history holds the `notify` activities
  the delivery schedules on events and target progress (no bot token: each call is skipped, but scheduled);
- `fleet`: an edge fleet of four sites in two batches, a timed pause after each, continued as new between
  the batches (both runs are kept);
- `governance`: a stage held by a Rego policy's deny and a schedule, let through by an override, with the
  audit stream and an incident hook (no routing key on the recorder: each call fails at once, but scheduled).
- `strategies`: a blue-green stage (a verification run before the switch, a pause after it, the scale-down
  delay and the retirement) with a stage verification run, then a canary stage that changes a feature flag
  and fails a retried verification run, rolled back.
- `host`: a build, two tests and a provisioning command, then a policy-gated stage: the commands after the
  build and the gate check are sent to the queue of the worker that ran the build (its host queue).
- `two-stages`: one target through two stages (a canary stage, then a `pause: {}` stage), aborted there with
  release scope: the rollback covers the target once (workflow patch `rollback-once-per-target`).
- `progress`: the `gates` scenario again, its rollouts reporting to the delivery only as they start waiting
  and handing their final status back in their results (workflows.rollout_control.PROGRESS_IN_RESULT).
- `audit`: an approval and a `pause: {}` step resumed, with a file sink configured: the audit stream's
  batches and the release claim go as local activities, markers in the history
  (workflows.delivery.LOCAL_ACTIVITIES).
- `abort-while-starting`: an abort accepted while the wave [a, b, c] is starting (b's start held on a durable
  timer, aicd.testing.engine.HoldRollouts): b is told, c never started (patch `stop-rollouts-started-late`).
- `pause-while-starting`: a pause accepted during b's start and a resume during c's: both reach b and c
  (patch `pause-rollouts-started-late`).
- `per-file-base`: the `strategies` scenario again, each rollout keeping its ownership base per file (patch
  `per-file-ownership-base`).
- `argocd-fleet-restore`: an Argo CD fleet whose one failed site is restored in Git and synced back to the
  restore commit (patch `sync-restored-sites`).
- `fleet-rollback`: an edge fleet of Argo CD sites (siteKind argocd) whose first batch fails over maxFailures:
  the delivery rolls the fleet back in Git. Recorded before the delivery synced the fleet's sites back.
- `fleet-rollback-synced`: the same, after it: the delivery syncs the sites the fleet moved to the rollback
  commit (workflows.delivery.SYNC_FLEET_BACK), as the fleet's result names them.
- `people`: a spec with `people`: Alice approves from Slack, her CLI name is refused as a second approval of
  hers, Bob's approval opens the gate (aicd.people).
- `fleet-failure`: an argocd fleet read from a fleet file, whose batch's health check and the read of its
  sites' names are refused for good (aicd.testing.engine.FailActivities): the fleet fails as a workflow, and
  the delivery's rollback only commits. Recorded before the fleet ended failed with a result.
- `fleet-failure-in-result`: the same, after it: the fleet ends failed with the sites it moved (patch
  `fleet-failure-in-result`), and the delivery's rollback syncs them back.
- `fleet-terminated`: an argocd fleet whose first batch waits for a human (`pause: {}`) is terminated: the
  delivery, told of no site it moved, rolls back in Git and syncs none. Recorded before it synced every site.
- `fleet-terminated-synced`: the same, after it: the rollback syncs every site of the fleet to the rollback
  commit (workflows.delivery.SYNC_FLEET_WITHOUT_RESULT).
- `audit-drain`: the `audit` scenario again, its end awaiting the last audit batch without a timer (patch
  `audit-drain-without-timer`).
- `fleet-bug`: an argocd fleet of four sites in three batches whose code raises a plain Python exception (a bug,
  aicd.testing.engine.WorkflowBug) as it starts checking batch 2: Temporal fails its workflow task again and
  again, the delivery waits for ever, until the fleet is terminated. Recorded before the fleet ended failed
  with a result.
- `fleet-bug-in-result`: the same, after it: the fleet ends failed with the two sites it moved (patch
  `fleet-bug-in-result`), and the delivery's rollback syncs them back; nobody terminates anything.
- `rollout-bug`: a `git` target whose rollout commits its first canary weight, then raises a plain Python
  exception (WorkflowBug) as it schedules its second step's `apply_step`: its workflow task fails again and
  again until the rollout is terminated; the delivery then rolls the target back. Recorded before the rollout
  ended failed with a result.
- `rollout-bug-in-result`: the same, after it: the rollout ends failed with its commit in its result (patch
  `rollout-bug-in-result`), and the delivery rolls the target back; nobody terminates anything.

Run `python -m tests.record_histories [SCENARIO...]` after a deliberate, versioned change of workflow
behaviour; the replay test fails whenever workflow code changes in a way that would break running deliveries.
Histories recorded by an older version of the code stay: they are what running deliveries look like."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.service import RPCError
from temporalio.worker import Interceptor

from aicd.activities.audit import AUDIT_FILE_ENV
from aicd.client import ActionRefused, handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger, rollout_workflow_id
from aicd.plan import DeliveryPlan
from aicd.testing.engine import (
    FailActivities,
    HoldRollouts,
    WorkflowBug,
    make_repo,
    plan_from,
    running_worker,
    spec_document,
    start_dev_server,
    wait_for,
)
from aicd.testing.standins.kube_argocd import KubeArgoCD

HISTORY_DIR = Path(__file__).parent / "histories"


def activity_types(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The activities a history (as JSON) ran: those scheduled through the server as activity tasks, and the
    local ones (a `core_local_activity` marker each), by type, in order."""
    scheduled, local = [], []
    for event in events:
        if attributes := event.get("activityTaskScheduledEventAttributes"):
            scheduled.append(attributes["activityType"]["name"])
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker["markerName"] == "core_local_activity":
            data = json.loads(base64.b64decode(marker["details"]["data"]["payloads"][0]["data"]))
            local.append(data["activity_type"])
    return scheduled, local


def patch_markers(events: list[dict[str, Any]]) -> list[bytes]:
    """The data of each workflow patch marker of a history (as JSON): which patches the run went through."""
    return [
        base64.b64decode(
            event["markerRecordedEventAttributes"]["details"]["patch-data"]["payloads"][0]["data"]
        )
        for event in events
        if "markerRecordedEventAttributes" in event
        and event["markerRecordedEventAttributes"]["markerName"] == "core_patch"
    ]


async def _histories(client: Client, delivery_id: str) -> list[WorkflowHistory]:
    """Every run of the delivery and of its children, the delivery first, runs in start order."""
    executions = [
        execution async for execution in client.list_workflows(f"WorkflowId STARTS_WITH '{delivery_id}'")
    ]
    executions.sort(key=lambda execution: (execution.id != delivery_id, execution.id, execution.start_time))
    return [
        await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        for execution in executions
    ]


async def record_gates(client: Client, root: Path, *, slack: bool = False) -> list[WorkflowHistory]:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {"a.yaml": "image: {tag: v0}\n", "b.yaml": "image: {tag: v0}\n"})
    extra: dict[str, Any] = {"notifications": {"slack": {"channel": "#deploys"}}} if slack else {}
    document = spec_document(
        "replay",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}, "b": {"kind": "git", "path": "b.yaml"}},
        [
            {
                "name": "one",
                "targets": ["a"],
                "approval": {"approvers": ["alice"], "timeout": "1h"},
                "strategy": {
                    "canary": {
                        "steps": [{"setWeight": 10}, {"pause": "1s"}, {"pause": {}}, {"setWeight": 100}]
                    }
                },
            },
            {
                "name": "two",
                "targets": ["b"],
                "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]}},
            },
        ],
        rollback={"scope": "release"},
        **extra,
    )
    plan = plan_from(document, revision)
    async with running_worker(client, root / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "one")
        await send_action(client, plan.delivery_id, "approve", HumanAction("alice"))
        await wait_for(
            client, plan.delivery_id, lambda s: "a" in s.targets and s.targets["a"].step_index == 1
        )
        await send_action(client, plan.delivery_id, "pause", HumanAction("oncall", "look"))
        await asyncio.sleep(1.5)
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
        await wait_for(
            client, plan.delivery_id, lambda s: "a" in s.targets and s.targets["a"].state == "awaiting-resume"
        )
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
        await wait_for(
            client, plan.delivery_id, lambda s: "b" in s.targets and s.targets["b"].state == "awaiting-resume"
        )
        await send_action(client, plan.delivery_id, "abort", HumanAction("carol", "enough"))
        await handle_for(client, plan.delivery_id).result()
        return await _histories(client, plan.delivery_id)


async def record_notify(client: Client, root: Path) -> list[WorkflowHistory]:
    histories = await record_gates(client, root, slack=True)
    return histories[:1]  # the children are those of `gates`; the delivery holds the notifications


async def record_fleet(client: Client, root: Path) -> list[WorkflowHistory]:
    sites = ["pop-1", "pop-2", "pop-3", "pop-4"]
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {f"edge/{site}.yaml": "image: {tag: v0}\n" for site in sites})
    fleet = {"kind": "edge", "sites": sites, "path": "edge/{{ site }}.yaml", "batches": ["50%", "100%"]}
    steps = [{"setWeight": 10}, {"pause": "1s"}, {"setWeight": 100}]
    document = spec_document(
        "replay-fleet",
        source,
        gitops,
        {"pops": fleet},
        [{"name": "edge", "targets": ["pops"], "strategy": {"canary": {"steps": steps}}}],
    )
    plan = plan_from(document, revision)
    async with running_worker(client, root / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "succeeded", result.reason
        return await _histories(client, plan.delivery_id)


DENY_ONE = 'package aicd.delivery\n\nimport rego.v1\n\ndeny contains "stage one is closed" if input.stage.name == "one"\n'


async def record_governance(client: Client, root: Path) -> list[WorkflowHistory]:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {"a.yaml": "image: {tag: v0}\n", "policies/one.rego": DENY_ONE})
    document = spec_document(
        "replay-governance",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [{"name": "one", "targets": ["a"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
        policy={"modules": ["policies/"], "overriders": ["lead"], "recheck": "1h"},
        schedule={"freezes": [{"name": "long-ago", "from": "2001-01-01", "until": "2001-01-02"}]},
        notifications={"pagerduty": {"routingKey": {"env": "AICD_RECORDER_HAS_NO_KEY"}}},
    )
    plan = plan_from(document, revision)
    async with running_worker(client, root / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "held")
        await send_action(client, plan.delivery_id, "override", HumanAction("lead", "recorded override"))
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "succeeded", result.reason
        return await _histories(client, plan.delivery_id)


FLAGS = {
    "flags": {
        "new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    }
}


async def record_strategies(client: Client, root: Path) -> list[WorkflowHistory]:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(
        root,
        "gitops",
        {"a.yaml": "image: {tag: v0}\n", "b.yaml": "image: {tag: v0}\n", "b-flags.json": json.dumps(FLAGS)},
    )
    ok = {"name": "ok", "command": ["true"]}
    blue_green = {
        "autoPromotionSeconds": 1,
        "scaleDownDelaySeconds": 2,
        "prePromotionAnalysis": [{"verify": ok}],
        "postPromotionAnalysis": [{"pause": "1s"}],
    }
    canary = [
        {"setWeight": 100},
        {"setFlag": {"flag": "new-checkout", "percent": 10, "variant": "on"}},
        {"verify": {"name": "e2e", "command": ["false"], "retries": 1, "retryInterval": "1s"}},
    ]
    document = spec_document(
        "replay-strategies",
        source,
        gitops,
        {
            "a": {"kind": "git", "path": "a.yaml"},
            "b": {"kind": "git", "path": "b.yaml", "flags": "b-flags.json"},
        },
        [
            {"name": "one", "targets": ["a"], "strategy": {"blueGreen": blue_green}, "verify": [ok]},
            {"name": "two", "targets": ["b"], "strategy": {"canary": {"steps": canary}}},
        ],
        rollback={"scope": "stage"},
    )
    plan = plan_from(document, revision)
    async with running_worker(client, root / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "failed" and "verify e2e failed" in result.reason, result.reason
        return await _histories(client, plan.delivery_id)


ALLOW = 'package aicd.delivery\n\nimport rego.v1\n\ndeny contains "never" if input.stage.name == "none"\n'


async def record_host(client: Client, root: Path) -> list[WorkflowHistory]:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {"a.yaml": "image: {tag: v0}\n", "policies/allow.rego": ALLOW})
    document = spec_document(
        "replay-host",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [{"name": "one", "targets": ["a"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
        build={"command": ["true"], "artifact": "registry.example.com/replay:{{ revision.short }}"},
        test=[{"name": "unit", "command": ["true"]}, {"name": "lint", "command": ["true"]}],
        provision=[{"name": "db", "command": ["true"]}],
        policy={"modules": ["policies/"], "recheck": "1h"},
    )
    plan = plan_from(document, revision)
    async with running_worker(client, root / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "succeeded", result.reason
        return await _histories(client, plan.delivery_id)


async def record_two_stages(client: Client, root: Path) -> list[WorkflowHistory]:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {"a.yaml": "image: {tag: v0}\n"})
    document = spec_document(
        "replay-stages",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [
            {"name": "one", "targets": ["a"], "strategy": {"canary": {"steps": [{"setWeight": 10}]}}},
            {"name": "two", "targets": ["a"], "strategy": {"canary": {"steps": [{"pause": {}}]}}},
        ],
        rollback={"scope": "release"},
    )
    plan = plan_from(document, revision)
    async with running_worker(client, root / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        await wait_for(
            client,
            plan.delivery_id,
            lambda s: s.stage == "two" and "a" in s.targets and s.targets["a"].state == "awaiting-resume",
        )
        await send_action(client, plan.delivery_id, "abort", HumanAction("carol", "enough"))
        await handle_for(client, plan.delivery_id).result()
        histories = await _histories(client, plan.delivery_id)
    return histories[:1]  # the children run unchanged code; the delivery decides what is rolled back


async def record_audit(client: Client, root: Path) -> list[WorkflowHistory]:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {"a.yaml": "image: {tag: v0}\n"})
    steps = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]
    document = spec_document(
        "replay-audit",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [
            {
                "name": "one",
                "targets": ["a"],
                "approval": {"approvers": ["alice"], "timeout": "1h"},
                "strategy": {"canary": {"steps": steps}},
            }
        ],
    )
    plan = plan_from(document, revision)
    stream = root / "audit.jsonl"
    # The worker runs in this process: its audit sink is this process's environment.
    with mock.patch.dict(os.environ, {AUDIT_FILE_ENV: str(stream)}):
        async with running_worker(client, root / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
            await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "one")
            await send_action(client, plan.delivery_id, "approve", HumanAction("alice"))
            await wait_for(client, plan.delivery_id, lambda s: s.phase == "paused")  # the `pause: {}` step
            await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
            result = await handle_for(client, plan.delivery_id).result()
            assert result.phase == "succeeded", result.reason
            histories = await _histories(client, plan.delivery_id)
    kinds = [json.loads(line)["type"].rsplit(".", 1)[1] for line in stream.read_text().splitlines()]
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("action") == 2, kinds
    return histories[:1]  # the rollout child has no audit stream


WAVE_SEED = "image: {tag: v0}\ncanary: {weight: 0, tag: v0}\n"
HOLD_WAVE = HoldRollouts("b", "c", seconds=3.0)  # the wave's later rollouts start after a durable timer


def wave_plan(root: Path, name: str) -> DeliveryPlan:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {f"{target}.yaml": WAVE_SEED for target in "abc"})
    steps = [{"setWeight": 10}, {"pause": "1s"}, {"setWeight": 100}]
    document = spec_document(
        name,
        source,
        gitops,
        {target: {"kind": "git", "path": f"{target}.yaml"} for target in "abc"},
        [{"name": "production", "targets": ["a", "b", "c"], "strategy": {"canary": {"steps": steps}}}],
    )
    return plan_from(document, revision)


async def record_abort_while_starting(client: Client, root: Path) -> list[WorkflowHistory]:
    plan = wave_plan(root, "replay-abort-race")
    async with running_worker(client, root / "state", [HOLD_WAVE]) as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: "a" in s.targets and "b" in s.targets)
        await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "stop it"))
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "aborted", result.reason
        return await _histories(client, plan.delivery_id)


async def record_pause_while_starting(client: Client, root: Path) -> list[WorkflowHistory]:
    plan = wave_plan(root, "replay-pause-race")
    async with running_worker(client, root / "state", [HOLD_WAVE]) as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: "a" in s.targets and "b" in s.targets)
        await send_action(client, plan.delivery_id, "pause", HumanAction("oncall", "alarms"))
        await wait_for(client, plan.delivery_id, lambda s: "c" in s.targets, timeout=20)
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall"))
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "succeeded", result.reason
        return await _histories(client, plan.delivery_id)


def argocd_fleet(root: Path, sites: list[str] | dict[str, str], **settings: Any) -> dict[str, Any]:
    """An edge target of Argo CD sites (`edge/<site>/values.yaml`), each an Application `web-<site>` in the
    stand-in `argocd_sites` starts."""
    return {
        "kind": "edge",
        "sites": sites,
        "path": "edge/{{ site }}/values.yaml",
        **settings,
        "siteKind": "argocd",
        "app": "web-{{ site }}",
        "context": "edge",
        "kubeconfig": str(root / "kubeconfig"),
    }


@contextlib.contextmanager
def argocd_sites(root: Path, gitops: str, sites: list[str], broken: str = "") -> Iterator[KubeArgoCD]:
    """The Argo CD stand-in with an Application per site of an `argocd_fleet`; the `broken` site is Degraded at
    every revision (its values say `region: <site>`)."""
    with KubeArgoCD(bookmark_interval_s=0.5) as argocd:
        argocd.write_kubeconfig(root / "kubeconfig", context="edge")
        argocd.broken_tags = {broken} if broken else set()
        for site in sites:
            argocd.create_app(f"web-{site}", repo=gitops, path=f"edge/{site}")
        yield argocd


def site_files(sites: list[str]) -> dict[str, str]:
    return {f"edge/{site}/values.yaml": f"image: {{tag: v0}}\nregion: {site}\n" for site in sites}


async def record_argocd_fleet_restore(client: Client, root: Path) -> list[WorkflowHistory]:
    sites = ["pop-1", "pop-2", "pop-3"]
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", site_files(sites))
    fleet = argocd_fleet(root, sites, batches=["100%"], maxFailures=1, progressDeadline="60s")
    document = spec_document(
        "replay-argocd-fleet",
        source,
        gitops,
        {"pops": fleet},
        [{"name": "edge", "targets": ["pops"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
    )
    plan = plan_from(document, revision)
    with argocd_sites(root, gitops, sites, broken="pop-2"):
        async with running_worker(client, root / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
            assert result.phase == "succeeded", result.reason
            return await _histories(client, plan.delivery_id)


async def record_people(client: Client, root: Path) -> list[WorkflowHistory]:
    """spec.people: Alice approves from Slack, her CLI name is refused as a second approval, Bob opens the
    gate; each action recorded with the person."""
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {"a.yaml": "image: {tag: v0}\n"})
    document = spec_document(
        "replay",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [
            {
                "name": "one",
                "targets": ["a"],
                "approval": {"approvers": ["alice", "bob"], "minApprovals": 2, "timeout": "1h"},
                "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
            }
        ],
        people={"alice": {"slack": "U0ALICE", "cli": "alice"}, "bob": {"cli": "bob"}},
    )
    plan = plan_from(document, revision)
    async with running_worker(client, root / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "one")
        await send_action(client, plan.delivery_id, "approve", HumanAction("U0ALICE", via="slack"))
        with contextlib.suppress(ActionRefused):
            await send_action(client, plan.delivery_id, "approve", HumanAction("alice", via="cli"))
        await send_action(client, plan.delivery_id, "approve", HumanAction("bob", via="cli"))
        await handle_for(client, plan.delivery_id).result()
        return await _histories(client, plan.delivery_id)


async def record_fleet_rollback(client: Client, root: Path) -> list[WorkflowHistory]:
    sites = ["pop-1", "pop-2", "pop-3", "pop-4"]
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", site_files(sites))
    fleet = argocd_fleet(root, sites, batches=["50%", "100%"], maxFailures=0, progressDeadline="10s")
    document = spec_document(
        "replay-fleet-rollback", source, gitops, {"pops": fleet}, [{"name": "edge", "targets": ["pops"]}]
    )
    plan = plan_from(document, revision)
    with argocd_sites(root, gitops, sites, broken="pop-2"):
        async with running_worker(client, root / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
            assert result.phase == "failed", result.reason
            return await _histories(client, plan.delivery_id)


def refused_fleet_checks(batch: int) -> FailActivities:
    """The health check of a fleet's batch `batch` refused for good, and so the read of its sites' names (Git
    unreachable) that would fail them by name: the fleet has an activity error no step turns into an outcome."""
    return FailActivities(
        lambda kind, args: (
            "the Kubernetes API refuses every call"
            if kind == "edge_check_sites" and args[0].step.endswith(f"/batch-{batch}")
            else "Git is unreachable"
            if kind == "gitops_read_fleet_names"
            else None
        )
    )


async def record_fleet_failure(client: Client, root: Path) -> list[WorkflowHistory]:
    sites = ["pop-1", "pop-2"]
    source, revision = make_repo(root, "source", {"README": "x\n"})
    files = site_files(sites)
    files["fleets/edge.yaml"] = "".join(f"- {site}\n" for site in sites)
    gitops, _ = make_repo(root, "gitops", files)
    fleet = argocd_fleet(root, {"file": "fleets/edge.yaml"}, batches=["100%"], progressDeadline="10s")
    document = spec_document(
        "replay-fleet-failure", source, gitops, {"pops": fleet}, [{"name": "edge", "targets": ["pops"]}]
    )
    plan = plan_from(document, revision)
    with argocd_sites(root, gitops, sites):
        async with running_worker(client, root / "state", [refused_fleet_checks(1)]) as queue:
            await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
            assert result.phase == "failed", result.reason
            return await _histories(client, plan.delivery_id)


async def record_fleet_terminated(client: Client, root: Path) -> list[WorkflowHistory]:
    sites = ["pop-1", "pop-2", "pop-3", "pop-4"]
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", site_files(sites))
    fleet = argocd_fleet(root, sites, batches=["50%", "100%"], progressDeadline="10s")
    document = spec_document(
        "replay-fleet-terminated",
        source,
        gitops,
        {"pops": fleet},
        [{"name": "edge", "targets": ["pops"], "strategy": {"canary": {"steps": [{"pause": {}}]}}}],
    )
    plan = plan_from(document, revision)
    with argocd_sites(root, gitops, sites):
        async with running_worker(client, root / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
            await wait_for(
                client,
                plan.delivery_id,
                lambda s: "pops" in s.targets and s.targets["pops"].state == "awaiting-resume",
            )
            fleet_id = rollout_workflow_id(plan.delivery_id, "edge", "pops")
            await client.get_workflow_handle(fleet_id).terminate("stuck")
            result = await handle_for(client, plan.delivery_id).result()
            assert result.phase == "failed", result.reason
            return await _histories(client, plan.delivery_id)


# A bug in the fleet's code (a plain Python exception, no Temporal failure) as it starts batch 2's health check.
FLEET_BUG = "a bug in the fleet's code"
BUG_IN_BATCH_2 = WorkflowBug(
    lambda kind, args: kind == "edge_check_sites" and args[0].step.endswith("/batch-2"), FLEET_BUG
)


async def stuck_on_a_bug(client: Client, workflow_id: str, message: str, timeout: float = 60.0) -> bool:
    """Whether the workflow's latest run fails its workflow task on a bug saying `message` - Temporal retries
    such a task for ever, so the run never ends - rather than ending (False)."""
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(RPCError):  # not started yet
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                return False
            async for event in handle.fetch_history_events():
                failed = event.workflow_task_failed_event_attributes
                if (
                    event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
                    and message in failed.failure.message
                ):
                    return True
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} neither ended nor failed a task on {message!r} within {timeout}s")


async def record_fleet_bug(client: Client, root: Path) -> list[WorkflowHistory]:
    sites = ["pop-1", "pop-2", "pop-3", "pop-4"]
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", site_files(sites))
    fleet = argocd_fleet(root, sites, batches=["25%", "50%", "100%"], progressDeadline="10s")
    document = spec_document(
        "replay-fleet-bug", source, gitops, {"pops": fleet}, [{"name": "edge", "targets": ["pops"]}]
    )
    plan = plan_from(document, revision)
    with argocd_sites(root, gitops, sites):
        async with running_worker(client, root / "state", [BUG_IN_BATCH_2]) as queue:
            await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
            fleet_id = rollout_workflow_id(plan.delivery_id, "edge", "pops")
            if await stuck_on_a_bug(client, fleet_id, FLEET_BUG):  # before patch fleet-bug-in-result
                await client.get_workflow_handle(fleet_id).terminate("stuck on a bug")
            result = await handle_for(client, plan.delivery_id).result()
            assert result.phase == "failed", result.reason
            return await _histories(client, plan.delivery_id)


# A bug in a target's rollout code as it schedules its second step (the first canary weight is committed).
ROLLOUT_BUG = "a bug in the rollout's code"
BUG_IN_STEP_2 = WorkflowBug(
    lambda kind, args: kind == "apply_step" and args[0].commit.step.endswith("/1-setWeight"), ROLLOUT_BUG
)


async def record_rollout_bug(client: Client, root: Path) -> list[WorkflowHistory]:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {"a.yaml": WAVE_SEED})
    steps = [{"setWeight": 20}, {"setWeight": 100}]
    document = spec_document(
        "replay-rollout-bug",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [{"name": "one", "targets": ["a"], "strategy": {"canary": {"steps": steps}}}],
    )
    plan = plan_from(document, revision)
    async with running_worker(client, root / "state", [BUG_IN_STEP_2]) as queue:
        await start_delivery(client, plan, Trigger("cli", "recorder"), queue=queue)
        rollout_id = rollout_workflow_id(plan.delivery_id, "one", "a")
        if await stuck_on_a_bug(client, rollout_id, ROLLOUT_BUG):  # before patch rollout-bug-in-result
            await client.get_workflow_handle(rollout_id).terminate("stuck on a bug")
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "failed", result.reason
        return await _histories(client, plan.delivery_id)


SCENARIOS: dict[str, Callable[[Client, Path], Awaitable[list[WorkflowHistory]]]] = {
    "gates": record_gates,
    "notify": record_notify,
    "fleet": record_fleet,
    "governance": record_governance,
    "strategies": record_strategies,
    "host": record_host,
    "progress": record_gates,
    "two-stages": record_two_stages,
    "audit": record_audit,
    "abort-while-starting": record_abort_while_starting,
    "pause-while-starting": record_pause_while_starting,
    "per-file-base": record_strategies,
    "argocd-fleet-restore": record_argocd_fleet_restore,
    "people": record_people,
    "fleet-rollback": record_fleet_rollback,
    "fleet-rollback-synced": record_fleet_rollback,
    "audit-drain": record_audit,
    "fleet-failure": record_fleet_failure,
    "fleet-failure-in-result": record_fleet_failure,
    "fleet-terminated": record_fleet_terminated,
    "fleet-terminated-synced": record_fleet_terminated,
    "fleet-bug": record_fleet_bug,
    "fleet-bug-in-result": record_fleet_bug,
    "rollout-bug": record_rollout_bug,
    "rollout-bug-in-result": record_rollout_bug,
}
# What a scenario's worker ran with that its replayer needs too: a durable timer an interceptor added.
REPLAY_INTERCEPTORS: dict[str, Sequence[Interceptor]] = {
    "abort-while-starting": [HOLD_WAVE],
    "pause-while-starting": [HOLD_WAVE],
    "fleet-bug": [BUG_IN_BATCH_2],
    "fleet-bug-in-result": [BUG_IN_BATCH_2],
    "rollout-bug": [BUG_IN_STEP_2],
    "rollout-bug-in-result": [BUG_IN_STEP_2],
}


async def record_scenario(client: Client, root: Path, scenario: str = "gates") -> list[WorkflowHistory]:
    return await SCENARIOS[scenario](client, root)


def history_name(history: WorkflowHistory, index: int) -> str:
    """`delivery`, or the child's target name; a continued run gets its number (`pops-run2`)."""
    kind = "delivery" if "--" not in history.workflow_id else history.workflow_id.rsplit("--", 1)[1]
    return kind if index == 1 else f"{kind}-run{index}"


async def main(scenarios: list[str]) -> None:
    async with await start_dev_server() as env:
        for scenario in scenarios:
            with tempfile.TemporaryDirectory() as root:
                histories = await record_scenario(env.client, Path(root), scenario)
            folder = HISTORY_DIR / scenario
            folder.mkdir(parents=True, exist_ok=True)
            runs: dict[str, int] = {}
            for history in histories:
                runs[history.workflow_id] = runs.get(history.workflow_id, 0) + 1
                path = folder / f"{history_name(history, runs[history.workflow_id])}.json"
                path.write_text(json.dumps(json.loads(history.to_json()), indent=1))
                print(f"recorded {path} ({len(history.events)} events)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or list(SCENARIOS)))
