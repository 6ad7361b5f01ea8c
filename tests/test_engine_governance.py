"""Governance gates end to end on the embedded stack (real Temporal, Git on bare repos, regorus): a policy's
deny holds a stage until an override by a listed person or a fix of the policy in the GitOps repo; a stage
outside its deploy window waits on a durable timer until it opens (time-skipping); `aicd freeze` holds a
delivery until break-glass by a listed person or `aicd unfreeze`."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from aicd.activities import WorkerSettings
from aicd.client import ActionRefused, change_freeze, get_status, handle_for, send_action, start_delivery
from aicd.messages import FREEZE_BOARD_ID, HumanAction, Trigger
from aicd.plan import DeliveryPlan
from aicd.testing.engine import (
    TEST_SERVER_BIN,
    commits,
    git,
    make_repo,
    plan_from,
    running_worker,
    spec_document,
    temporal_env,
    wait_for,
)
from aicd.testing.standins.opa import OpaStandin
from aicd.testing.standins.slack import SlackStandIn
from aicd.worker import build_worker
from aicd.workflows.common import HOST_WAIT, host_queue

__all__ = ["temporal_env"]

POLICY = (Path(__file__).resolve().parents[1] / "policies" / "delivery.rego").read_text()
SEED = "image:\n  tag: v0\n"


def production_spec(
    tmp_path: Path, gitops_files: dict[str, str], app: str = "web", **extra: Any
) -> tuple[dict[str, Any], str, str]:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": SEED, **gitops_files})
    document = spec_document(
        app,
        source,
        gitops,
        {"web": {"kind": "git", "path": "apps/web/values.yaml", "region": "us-east-1"}},
        [{"name": "production", "targets": ["web"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
        **extra,
    )
    return document, gitops, revision


def step_commits(gitops: str) -> list[dict[str, str]]:
    return [commit for commit in commits(gitops) if "Aicd-Step" in commit]


async def refused(client: Client, delivery_id: str, kind: str, action: HumanAction) -> str:
    try:
        await send_action(client, delivery_id, kind, action)
    except ActionRefused as error:
        return str(error)
    raise AssertionError(f"{kind} by {action.actor} was accepted")


def held_by(gate: str) -> Any:
    return lambda status: status.phase == "held" and [hold.gate for hold in status.holds] == [gate]


@pytest.fixture
async def slack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackStandIn]:
    standin = SlackStandIn()
    await standin.start()
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", standin.base_url)
    yield standin
    await standin.stop()


async def test_policy_deny_holds_the_stage_until_a_listed_override(
    temporal_env: WorkflowEnvironment, tmp_path: Path, slack: SlackStandIn
) -> None:
    policy = {"modules": ["policies/"], "overriders": ["lead"], "recheck": "1h"}
    document, gitops, revision = production_spec(
        tmp_path,
        {"policies/delivery.rego": POLICY},
        policy=policy,
        notifications={"slack": {"channel": "#deploys"}},
        people={"lead": {"slack": "U0LEAD", "cli": "lead"}},  # overriders may name people (aicd.people)
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        # A CLI delivery has no branch: the example policy keeps production to release/* branches.
        await start_delivery(client, plan, Trigger("cli", "carol"), queue=queue)
        status = await wait_for(client, plan.delivery_id, held_by("policy"))
        hold = status.holds[0]
        assert hold.messages == [
            "production deliveries come from release/* branches; this one came from no branch (cli by carol)"
        ]
        assert hold.override == "override" and hold.overriders == ["lead"]
        assert status.warnings == ["policy: no Trivy report: this delivery has no build to scan its image"]
        assert step_commits(gitops) == []
        deny = "production deliveries come from release/* branches"
        [message] = await slack.wait_for(
            lambda: [m for m in slack.top_level() if deny in json.dumps(m.blocks)]
        )
        assert ":no_entry_sign:" in json.dumps(message.blocks) and "held" in message.text
        assert "may not override" in await refused(
            client, plan.delivery_id, "override", HumanAction("mallory", "pls")
        )
        assert "needs a reason" in await refused(client, plan.delivery_id, "override", HumanAction("lead"))
        assert "no hold that break-glass" in await refused(
            client, plan.delivery_id, "break_glass", HumanAction("lead", "x")
        )
        assert "U0LEAD may not override" in await refused(  # the lead's Slack ID, not from Slack
            client, plan.delivery_id, "override", HumanAction("U0LEAD", "x", via="dashboard")
        )
        await send_action(
            client,
            plan.delivery_id,
            "override",
            HumanAction("U0LEAD", "hotfix INC-7, CAB approved", via="slack"),
        )
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
        # The override is announced in the channel, not only in the thread.
        announced = await slack.wait_for(
            lambda: [m for m in slack.messages.values() if m.broadcast and "hotfix INC-7" in m.text]
        )
        assert "lead (as U0LEAD via slack) let stage production through" in announced[0].text
    assert result.phase == "succeeded"
    assert len(step_commits(gitops)) >= 1
    overrides = [action for action in status.actions if action.kind == "override"]
    assert [(a.actor, a.person, a.reason, a.stage) for a in overrides] == [
        ("U0LEAD", "lead", "hotfix INC-7, CAB approved", "production")
    ]
    assert status.holds == []


async def test_policy_deny_lifts_when_the_policy_is_fixed_in_git(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    strict = 'package aicd.delivery\n\nimport rego.v1\n\ndeny contains "no deploys today" if input.stage.name == "production"\n'
    policy = {"modules": ["policies/strict.rego"], "recheck": "1s"}
    document, gitops, revision = production_spec(tmp_path, {"policies/strict.rego": strict}, policy=policy)
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "carol"), queue=queue)
        status = await wait_for(client, plan.delivery_id, held_by("policy"))
        assert status.holds[0].messages == ["no deploys today"]
        # The fix is a reviewed commit of the policy in the GitOps repository.
        work = tmp_path / "gitops-fix"
        git("clone", "-q", gitops, str(work))
        (work / "policies" / "strict.rego").write_text(strict.replace('"production"', '"never"'))
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "relax the policy", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded"


async def test_stage_waits_for_its_window_on_a_durable_timer(tmp_path: Path) -> None:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=TEST_SERVER_BIN
    ) as env:
        now = datetime.now(UTC)
        day_after = (now + timedelta(days=2)).date()
        schedule = {
            "timezone": "UTC",
            "windows": [{"days": [day_after.strftime("%a").lower()], "hours": "09:00-17:00"}],
            "calendar": None,
        }
        document, gitops, revision = production_spec(tmp_path, {}, schedule=schedule)
        plan = plan_from(document, revision)
        async with running_worker(env.client, tmp_path / "state") as queue:
            await start_delivery(
                env.client, plan, Trigger("cli", "t"), queue=queue, index_search_attributes=False
            )
            status = await wait_for(env.client, plan.delivery_id, held_by("window"))
            opens = datetime.combine(day_after, datetime.min.time(), UTC).replace(hour=9)
            assert status.holds[0].until == opens.isoformat()
            assert status.holds[0].reason == f"waiting for window: opens {opens.isoformat()}"
            await env.sleep(timedelta(hours=30))  # a durable timer: a day later, still waiting
            status = await get_status(env.client, plan.delivery_id)
            assert status.phase == "held" and step_commits(gitops) == []
            await env.sleep(opens - datetime.now(UTC) + timedelta(hours=1 - 30))  # past the opening
            result = await handle_for(env.client, plan.delivery_id).result()
            status = await get_status(env.client, plan.delivery_id)
    assert result.phase == "succeeded"
    assert [a.kind for a in status.actions if a.kind == "break-glass"] == []  # the window opened by itself
    assert len(step_commits(gitops)) >= 1


@contextlib.asynccontextmanager
async def freeze_board(client: Client) -> AsyncIterator[None]:
    """The organisation-wide board is one workflow per namespace: end it after the test, so no other test
    meets this test's freezes (or a board whose worker has gone)."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(FREEZE_BOARD_ID).terminate("test over")


async def test_freeze_holds_until_break_glass_or_unfreeze(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    schedule = {"breakGlass": ["lead"], "recheck": "1s"}
    document, gitops, revision = production_spec(tmp_path, {}, schedule=schedule)
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue, freeze_board(client):
        oncall = HumanAction("oncall", "INC-42: payments degraded")
        assert await change_freeze(client, "freeze", "web*", oncall, queue=queue) == "froze web*"
        try:
            await change_freeze(client, "freeze", "web*", oncall, queue=queue)
            raise AssertionError("a second freeze of web* was accepted")
        except ActionRefused as error:
            assert "already frozen" in str(error)
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        status = await wait_for(client, plan.delivery_id, held_by("freeze"))
        assert "INC-42: payments degraded" in status.holds[0].reason
        assert step_commits(gitops) == []
        assert "may not break-glass" in await refused(
            client, plan.delivery_id, "break_glass", HumanAction("bob", "x")
        )
        await send_action(client, plan.delivery_id, "break_glass", HumanAction("lead", "the fix for INC-42"))
        assert (await handle_for(client, plan.delivery_id).result()).phase == "succeeded"
        status = await get_status(client, plan.delivery_id)
        assert [(a.kind, a.actor, a.reason) for a in status.actions if a.kind == "break-glass"] == [
            ("break-glass", "lead", "the fix for INC-42")
        ]
        # A second delivery is held too, until the freeze is lifted.
        second = await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(client, second.delivery_id, held_by("freeze"))
        await change_freeze(client, "unfreeze", "web*", HumanAction("oncall", "resolved"), queue=queue)
        assert (await handle_for(client, second.delivery_id).result()).phase == "succeeded"
        actions = (await get_status(client, second.delivery_id)).actions
        assert [a.kind for a in actions if a.kind == "break-glass"] == []


async def test_an_opa_server_decides_when_configured(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    opa = OpaStandin()
    await opa.start()
    try:
        async with httpx.AsyncClient() as http:  # loaded as platform teams load OPA
            assert (await http.put(f"{opa.url}/v1/policies/delivery", content=POLICY)).status_code == 200
        policy = {"opa": {"url": opa.url}, "overriders": ["lead"], "recheck": "1s"}
        document, _gitops, revision = production_spec(tmp_path, {}, app="web-opa", policy=policy)
        plan = plan_from(document, revision)
        client = temporal_env.client
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("github", "dave", branch="feature/x"), queue=queue)
            status = await wait_for(client, plan.delivery_id, held_by("policy"))
            assert status.holds[0].messages == [
                "production deliveries come from release/* branches; this one came from branch feature/x"
            ]
            sent = opa.requests[-1]["input"]
            assert sent["trigger"] == {
                "source": "github",
                "actor": "dave",
                "branch": "feature/x",
                "detail": "",
            }
            assert sent["stage"]["regions"] == ["us-east-1"] and sent["artifact"]["tag"] == revision
            # The platform team relaxes the policy on its server: the next recheck lets the stage go.
            async with httpx.AsyncClient() as http:
                relaxed = "package aicd.delivery\n"  # no deny rules any more
                assert (await http.put(f"{opa.url}/v1/policies/delivery", content=relaxed)).status_code == 200
            assert (await handle_for(client, plan.delivery_id).result()).phase == "succeeded"
    finally:
        await opa.stop()


CALENDAR = """apiVersion: aicd.dev/v1alpha1
kind: DeliveryCalendar
timezone: UTC
freezes:
  - {{name: incident-week, from: "{start}", until: "{end}", reason: "payments incident review", apps: ["web-*"]}}
breakGlass: [platform-lead]
"""


async def test_the_organisation_calendar_in_git_freezes_without_any_spec_key(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()
    calendar = CALENDAR.format(start=today - timedelta(days=1), end=today + timedelta(days=2))
    document, gitops, revision = production_spec(tmp_path, {"aicd/calendar.yaml": calendar}, app="web-cal")
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        status = await wait_for(client, plan.delivery_id, held_by("freeze"))
        hold = status.holds[0]
        assert "incident-week (payments incident review) [aicd/calendar.yaml]" in hold.reason
        assert hold.overriders == ["platform-lead"] and hold.until is not None
        assert step_commits(gitops) == []
        await send_action(
            client, plan.delivery_id, "break_glass", HumanAction("platform-lead", "security fix")
        )
        assert (await handle_for(client, plan.delivery_id).result()).phase == "succeeded"


async def test_every_wave_policy_holds_a_later_wave_after_the_first_went_out(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    second_wave = 'package aicd.delivery\n\nimport rego.v1\n\ndeny contains "wave 2 waits for the soak review" if input.wave == 2\n'
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(
        tmp_path, "gitops", {"a.yaml": SEED, "b.yaml": SEED, "policies/waves.rego": second_wave}
    )
    document = spec_document(
        "web-waves",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}, "b": {"kind": "git", "path": "b.yaml"}},
        [{"name": "production", "waves": [["a"], ["b"]]}],
        policy={"modules": ["policies/"], "everyWave": True, "overriders": ["lead"], "recheck": "1h"},
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        status = await wait_for(client, plan.delivery_id, held_by("policy"))
        assert status.wave == 2 and status.holds[0].messages == ["wave 2 waits for the soak review"]
        assert status.targets["a"].state == "promoted" and "b" not in status.targets
        await send_action(client, plan.delivery_id, "override", HumanAction("lead", "soak reviewed"))
        assert (await handle_for(client, plan.delivery_id).result()).phase == "succeeded"
    assert {commit["Aicd-Step"].split("/")[1] for commit in step_commits(gitops)} == {"a", "b"}


PEOPLE_POLICY = """package aicd.delivery

import rego.v1

sre := {"alice", "bob"}

# The people who approved this stage (a person of the spec's `people`, whichever identity they used).
approvers contains entry.person if {
	some entry in object.get(input.approved_by, input.stage.name, [])
	entry.declared
}

deny contains "production needs alice's approval" if {
	input.stage.name == "production"
	not "alice" in approvers
}

deny contains msg if {
	input.stage.name == "production"
	count(approvers & sre) < 2
	msg := sprintf("production needs two people of SRE, it has %d", [count(approvers & sre)])
}

deny contains msg if {
	some entry in object.get(input.approved_by, input.stage.name, [])
	entry.person == "alice"
	[entry.identity, entry.via] != ["U0ALICE", "slack"]
	msg := sprintf("alice approved as %s via %s", [entry.identity, entry.via])
}
"""


async def test_a_policy_names_people_whichever_identity_they_approved_with(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """`input.approved_by`: a policy requiring Alice, and two people of SRE, passes when Alice approves from
    Slack as U0ALICE and Bob from the CLI; `input.approvals` holds only the identities."""
    stage = {
        "name": "production",
        "targets": ["web"],
        "approval": {"approvers": ["alice", "bob"], "minApprovals": 2, "timeout": "1h"},
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
    }
    document, gitops, revision = production_spec(
        tmp_path,
        {"policies/people.rego": PEOPLE_POLICY},
        policy={"modules": ["policies/"], "recheck": "1h"},
        people={"alice": {"slack": "U0ALICE", "cli": "alice"}, "bob": {"slack": "U0BOB", "cli": "bob"}},
    )
    document["spec"]["stages"] = [stage]
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "carol"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda status: status.pending_approval == "production")
        await send_action(client, plan.delivery_id, "approve", HumanAction("U0ALICE", via="slack"))
        await send_action(client, plan.delivery_id, "approve", HumanAction("bob", via="cli"))
        status = await wait_for(client, plan.delivery_id, lambda s: s.phase in ("held", "succeeded"))
    assert status.phase == "succeeded", [hold.messages for hold in status.holds]
    assert status.approvals == {"production": ["U0ALICE", "bob"]}
    assert len(step_commits(gitops)) >= 1


TRIVY = {
    "Results": [
        {
            "Target": "registry.example.com/web (debian 12.5)",
            "Vulnerabilities": [
                {
                    "VulnerabilityID": "CVE-2024-6387",
                    "PkgName": "openssh",
                    "InstalledVersion": "9.2",
                    "Severity": "CRITICAL",
                }
            ],
        }
    ]
}


async def test_a_build_report_reaches_the_policy_and_a_critical_cve_holds_production(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    # The build leaves Trivy's JSON report where aicd tells it ($AICD_REPORTS_DIR), as `trivy image -f json -o` does.
    write_report = (
        "import json, os, pathlib; pathlib.Path(os.environ['AICD_REPORTS_DIR'], 'trivy.json')"
        f".write_text(json.dumps({TRIVY!r}))"
    )
    build = {
        "command": [sys.executable, "-c", write_report],
        "artifact": "registry.example.com/web:{{ revision.short }}",
    }
    policy = {"modules": ["policies/delivery.rego"], "recheck": "1h"}
    document, gitops, revision = production_spec(
        tmp_path, {"policies/delivery.rego": POLICY}, app="web-cve", policy=policy, build=build
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("github", "erin", branch="release/2.0"), queue=queue)
        status = await wait_for(client, plan.delivery_id, held_by("policy"))
        assert status.holds[0].messages == [
            "critical vulnerability CVE-2024-6387 in openssh 9.2 (registry.example.com/web (debian 12.5))"
        ]
        assert status.holds[0].overriders == []  # nobody may override this policy: fix it or abort
        assert "nobody" in await refused(client, plan.delivery_id, "override", HumanAction("erin", "ship it"))
        await send_action(
            client, plan.delivery_id, "abort", HumanAction("erin", "rebuild with the patched base")
        )
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "aborted" and step_commits(gitops) == []


def reports_spec(tmp_path: Path, app: str) -> tuple[DeliveryPlan, str]:
    """A production stage behind an approval and the CVE policy, after a build that leaves Trivy's report."""
    write_report = (
        "import json, os, pathlib; pathlib.Path(os.environ['AICD_REPORTS_DIR'], 'trivy.json')"
        f".write_text(json.dumps({TRIVY!r}))"
    )
    build = {"command": [sys.executable, "-c", write_report], "artifact": "registry.example.com/web:1"}
    policy = {"modules": ["policies/delivery.rego"], "recheck": "1h"}
    document, gitops, revision = production_spec(
        tmp_path, {"policies/delivery.rego": POLICY}, app=app, policy=policy, build=build
    )
    document["spec"]["stages"][0]["approval"] = {"approvers": ["erin"], "timeout": "1h"}
    return plan_from(document, revision), gitops


def scheduled_on(history: WorkflowHistory, activity: str) -> list[str]:
    return [
        event.activity_task_scheduled_event_attributes.task_queue.name
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == activity
    ]


async def test_with_two_workers_the_gate_asks_the_worker_that_ran_the_build_for_its_report(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Reports stay on the worker that ran the build (never in history); with several workers the gate
    check is sent to that worker's own queue, so the policy sees the report whichever worker took it."""
    plan, _ = reports_spec(tmp_path, "web-two")
    client = temporal_env.client
    queue = f"hosts-{uuid.uuid4().hex[:8]}"
    host = socket.gethostname()
    states = [tmp_path / "state-a", tmp_path / "state-b"]
    second_client = await Client.connect(client.service_client.config.target_host)  # another host's
    async with build_worker(client, WorkerSettings(states[0]), queue):
        async with build_worker(second_client, WorkerSettings(states[1]), queue):
            await start_delivery(client, plan, Trigger("github", "erin", branch="release/2.0"), queue=queue)
            await wait_for(client, plan.delivery_id, lambda s: s.phase == "awaiting-approval")
            await send_action(client, plan.delivery_id, "approve", HumanAction("erin"))
            status = await wait_for(client, plan.delivery_id, held_by("policy"))
            await send_action(client, plan.delivery_id, "abort", HumanAction("erin", "rebuild"))
            await handle_for(client, plan.delivery_id).result()
    assert status.holds[0].messages[0].startswith("critical vulnerability CVE-2024-6387")
    builder = next(
        state for state in states if (state / "reports" / plan.delivery_id / "trivy.json").exists()
    )
    history = await handle_for(client, plan.delivery_id).fetch_history()
    assert scheduled_on(history, "run_command") == [queue]
    assert set(scheduled_on(history, "check_gates")) == {host_queue(queue, host, str(builder.resolve()))}


async def test_when_the_build_worker_is_gone_another_answers_the_gate_without_its_reports(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The worker that ran the build stops for good: the gate check waits HOST_WAIT for it, then runs on
    another worker, where the report is missing - the policy denies (fail closed) and status says why."""
    plan, _ = reports_spec(tmp_path, "web-gone")
    client = temporal_env.client
    queue = f"hosts-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, WorkerSettings(tmp_path / "state-a"), queue):
        await start_delivery(client, plan, Trigger("github", "erin", branch="release/2.0"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "awaiting-approval")
    async with build_worker(client, WorkerSettings(tmp_path / "state-b"), queue):
        await send_action(client, plan.delivery_id, "approve", HumanAction("erin"))
        status = await wait_for(client, plan.delivery_id, held_by("policy"), timeout=HOST_WAIT.seconds + 60)
        await send_action(client, plan.delivery_id, "abort", HumanAction("erin", "rebuild"))
        await handle_for(client, plan.delivery_id).result()
    assert status.holds[0].messages == [
        "no Trivy report from the build: it must write $AICD_REPORTS_DIR/trivy.json (rebuild to scan again)"
    ]
    assert any("did not answer within 30s" in warning for warning in status.warnings), status.warnings
    history = await handle_for(client, plan.delivery_id).fetch_history()
    own = host_queue(queue, socket.gethostname(), str((tmp_path / "state-a").resolve()))
    assert scheduled_on(history, "check_gates")[:2] == [own, queue]
