"""Slack through the gateway: signed button clicks call the workflow's updates as the real Slack user, the
message is redrawn to say who did what, refusals go to that user only and change nothing, old or badly
signed requests are refused; `/aicd` pauses and resumes every running delivery of an app. Pause, resume and
abort (buttons and `/aicd`) only from a delivery's approvers and AICD_SLACK_OPERATORS (`*`: anyone); anyone
else is told privately and nothing reaches the delivery."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd.cli.app import EXIT_USAGE
from aicd.client import ActionRefused, get_status, handle_for, list_deliveries, send_action, start_delivery
from aicd.dashboard.auth import Identity, steering_refusal
from aicd.dashboard.settings import DashboardSettings
from aicd.gateway.context import SLACK_OPERATORS_ENV, Gateway, GatewaySettings, slack_teams
from aicd.gateway.signatures import sign_slack
from aicd.messages import HumanAction, Trigger
from aicd.people import Person, Roster
from aicd.plan import DeliveryPlan, build_plan
from aicd.slack_blocks import action_value
from aicd.spec.loader import load_spec
from aicd.steering import may_steer
from aicd.testing.engine import (
    commits,
    git,
    make_repo,
    running_worker,
    spec_document,
    temporal_env,
    wait_for,
)
from aicd.testing.standins.slack import Message, SlackStandIn
from tests.test_gateway_webhooks import SLACK_SECRET, app_spec, http, make_gateway, metric, write_spec

__all__ = ["temporal_env"]

APPROVER = "U024BE7LH"
CAROL = "U0CAROL"
ALICE = "U0ALICE"
GATEWAY_TOKEN = "xoxb-gateway"


@pytest.fixture
async def slack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackStandIn]:
    standin = SlackStandIn(tokens=("xoxb-test", GATEWAY_TOKEN))
    await standin.start()
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")  # the worker's notify activity
    monkeypatch.setenv("SLACK_API_URL", standin.base_url)
    yield standin
    await standin.stop()


def empty_commit(repo: Path, message: str) -> str:
    """A new (empty) commit on the repository's checked-out branch: a second revision to deliver."""
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@localhost",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        message,
        cwd=repo,
    )
    return git("rev-parse", "HEAD", cwd=repo)


def signed(body: bytes, *, age_s: float = 0, secret: str = SLACK_SECRET) -> dict[str, str]:
    timestamp = str(int(time.time() - age_s))
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": sign_slack(secret, timestamp, body),
    }


def click_body(message: Message, action_id: str, user_id: str, username: str) -> bytes:
    button = next(
        e
        for b in message.blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == action_id
    )
    payload = {
        "type": "block_actions",
        "user": {"id": user_id, "username": username, "name": username, "team_id": "T0"},
        "api_app_id": "A0",
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        },
        "channel": {"id": message.channel, "name": "deploys"},
        "message": {"ts": message.ts, "text": message.text},
        "response_url": "https://hooks.slack.example/actions/T0/1/x",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "b",
                "value": button["value"],
                "type": "button",
                "action_ts": "1",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def command_body(text: str, user_id: str = "U0ONCALL", user_name: str = "oncall", team: str = "T0") -> bytes:
    return urlencode(
        {
            "command": "/aicd",
            "text": text,
            "user_id": user_id,
            "user_name": user_name,
            "channel_id": "C0DEPLOYS",
            "team_id": team,
            "response_url": "https://hooks.slack.example/commands/T0/1/x",
            "trigger_id": "1.2.3",
        }
    ).encode()


def slack_gateway(client: Client, specs: Path, queue: str, slack: SlackStandIn) -> Gateway:
    return make_gateway(client, specs, queue, slack_bot_token=GATEWAY_TOKEN, slack_api_url=slack.base_url)


async def approval_message(client: Client, plan: DeliveryPlan, queue: str, slack: SlackStandIn) -> Message:
    """Start the delivery and wait for its Slack message asking for the production stage's approval."""
    await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
    await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "production")
    return await slack.wait_for(
        lambda: next((m for m in slack.top_level() if "approve" in json.dumps(m.blocks)), None)
    )


async def test_approval_from_slack(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    stage = {
        "name": "production",
        "targets": ["web"],
        "approval": {"approvers": [APPROVER, CAROL], "minApprovals": 2, "timeout": "1h"},
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
    }
    document, _, revision = app_spec(
        tmp_path, "slacky", stages=[stage], notifications={"slack": {"channel": "#deploys"}}
    )
    spec_file = write_spec(tmp_path / "specs", document)
    plan = build_plan(load_spec(spec_file), revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = slack_gateway(client, tmp_path / "specs", queue, slack)
        message = await approval_message(client, plan, queue, slack)
        async with http(gateway) as web:
            # Not an approver: told privately, nothing changes.
            answer = await web.post(
                "/slack/interactions",
                content=(body := click_body(message, "approve", "U0MALLORY", "mallory")),
                headers=signed(body),
            )
            assert answer.status_code == 200
            (ephemeral,) = await slack.wait_for(lambda: slack.ephemerals)
            assert ephemeral["user"] == "U0MALLORY" and ephemeral["channel"] == "C0DEPLOYS"
            assert "U0MALLORY is not an approver of stage production" in ephemeral["text"]
            assert slack.calls_of("chat.update", token=GATEWAY_TOKEN) == []

            # Too old, from the future, badly signed, unsigned: 401 before anything happens.
            body = click_body(message, "approve", APPROVER, "boss")
            for headers, reason in (
                (signed(body, age_s=360), "stale timestamp"),
                (signed(body, age_s=-360), "stale timestamp"),
                (signed(body, secret="wrong"), "bad signature"),
                ({"content-type": "application/x-www-form-urlencoded"}, "missing"),
            ):
                refused = await web.post("/slack/interactions", content=body, headers=headers)
                assert refused.status_code == 401 and reason in refused.json()["error"]
            status = await get_status(client, plan.delivery_id)
            assert status.approvals == {} and status.pending_approval == "production"

            # The approver by user ID: accepted, and the message says so.
            answer = await web.post("/slack/interactions", content=body, headers=signed(body))
            assert answer.status_code == 200
            redraw = await slack.wait_for(lambda: slack.calls_of("chat.update", token=GATEWAY_TOKEN))
            assert redraw[0].args["ts"] == message.ts and redraw[0].args["channel"] == "C0DEPLOYS"
            drawn = json.dumps(redraw[0].args["blocks"])
            assert (
                f"Last action: *approve* by <@{APPROVER}> (stage production)" in drawn
                and "1/2 approvals" in drawn
            )

            # Carol, listed by her user ID: her click counts as hers.
            body = click_body(message, "approve", CAROL, "carol")
            assert (
                await web.post("/slack/interactions", content=body, headers=signed(body))
            ).status_code == 200
            result = await handle_for(client, plan.delivery_id).result()
            metrics = (await web.get("/metrics")).text
        final = await get_status(client, plan.delivery_id)
    assert result.phase == "succeeded"
    assert [(a.kind, a.actor, a.stage) for a in final.actions] == [
        ("approve", APPROVER, "production"),
        ("approve", CAROL, "production"),
    ]
    assert len(slack.ephemerals) == 1
    assert metric(metrics, 'aicd_slack_actions_total{kind="approve",outcome="accepted",via="button"}') == 2
    assert metric(metrics, 'aicd_slack_actions_total{kind="approve",outcome="refused",via="button"}') == 1
    assert (
        metric(metrics, 'aicd_slack_requests_refused_total{endpoint="interactions",reason="stale_timestamp"}')
        == 2
    )


async def test_a_persons_slack_id_counts_as_that_person(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    """spec.people: Alice is listed by name; her click in Slack is hers, the message names her, and her CLI
    name cannot add a second approval."""
    stage = {
        "name": "production",
        "targets": ["web"],
        "approval": {"approvers": ["alice", CAROL], "minApprovals": 2, "timeout": "1h"},
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
    }
    document, _, revision = app_spec(
        tmp_path,
        "people",
        stages=[stage],
        notifications={"slack": {"channel": "#deploys"}},
        people={"alice": {"slack": ALICE, "cli": "alice"}},
    )
    spec_file = write_spec(tmp_path / "specs", document)
    plan = build_plan(load_spec(spec_file), revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = slack_gateway(client, tmp_path / "specs", queue, slack)
        message = await approval_message(client, plan, queue, slack)
        assert f"*Approvers* alice, <@{CAROL}>" in json.dumps(message.blocks)
        async with http(gateway) as web:
            body = click_body(message, "approve", ALICE, "alice.smith")
            answer = await web.post("/slack/interactions", content=body, headers=signed(body))
            assert answer.status_code == 200
            redraw = await slack.wait_for(lambda: slack.calls_of("chat.update", token=GATEWAY_TOKEN))
            drawn = json.dumps(redraw[0].args["blocks"])
            assert f"Last action: *approve* by alice (as <@{ALICE}> via slack) (stage production)" in drawn
            assert "1/2 approvals (alice (as U0ALICE via slack))" in drawn
            try:
                await send_action(client, plan.delivery_id, "approve", HumanAction("alice", via="cli"))
                raise AssertionError("Alice's second identity added a second approval")
            except ActionRefused as refused:
                assert str(refused) == (
                    "alice (as U0ALICE via slack) already approved stage production; each person counts once"
                )
            assert (await get_status(client, plan.delivery_id)).phase == "awaiting-approval"
            body = click_body(message, "approve", CAROL, "carol")
            assert (
                await web.post("/slack/interactions", content=body, headers=signed(body))
            ).status_code == 200
            result = await handle_for(client, plan.delivery_id).result()
        final = await get_status(client, plan.delivery_id)
    assert result.phase == "succeeded"
    assert [(a.actor, a.person) for a in final.actions] == [(ALICE, "alice"), (CAROL, "")]
    assert slack.ephemerals == []


def test_steering_resolves_a_persons_identities() -> None:
    """aicd.steering reads the plan's people: Alice, listed by name, may pause from Slack with her user ID
    and from the dashboard with her sign-in; her Slack ID typed into another channel is nobody listed."""
    people = [Person("alice", slack=ALICE, dashboard="alice@example.com")]
    approvers = Roster.of(people, ["alice"])
    no_operators = frozenset[str]()
    assert may_steer(ALICE, "slack", "pause", approvers, no_operators)
    assert may_steer("alice@example.com", "dashboard", "resume", approvers, no_operators)
    assert not may_steer(ALICE, "dashboard", "abort", approvers, no_operators)
    assert not may_steer("alice", "dashboard", "pause", approvers, no_operators)  # her name is no identity
    assert not may_steer(MALLORY, "slack", "pause", approvers, no_operators)
    refusal = steering_refusal(Identity(ALICE, "session"), "pause", approvers, DashboardSettings())
    assert (
        refusal
        == f"{ALICE} may not pause this delivery: only its approvers (alice) and the dashboard's operators may"
    )


async def test_slash_commands_pause_and_resume_every_running_delivery(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    stage = {
        "name": "staging",
        "targets": ["web"],
        "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": "1h"}, {"setWeight": 100}]}},
    }
    app = f"cmd-{uuid.uuid4().hex[:6]}"
    document, _, first = app_spec(
        tmp_path, app, stages=[stage], notifications={"slack": {"channel": "#deploys"}}, concurrency="queue"
    )
    seed = tmp_path / f"{app}-source-seed"
    second = empty_commit(seed, "second")
    spec = load_spec(write_spec(tmp_path / "specs", document))
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = make_gateway(
            client,
            tmp_path / "specs",
            queue,
            slack_bot_token=GATEWAY_TOKEN,
            slack_api_url=slack.base_url,
            slack_operators=frozenset({"U0ONCALL"}),  # the stage has no approvers: on-call steers
        )
        plans = [build_plan(spec, first), build_plan(spec, second)]
        for plan in plans:
            await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        # The newer release queues behind the older one (spec.concurrency: queue): two running deliveries.
        await wait_for(
            client,
            plans[0].delivery_id,
            lambda s: "web" in s.targets and s.targets["web"].step_kind == "pause",
        )
        await wait_for(client, plans[1].delivery_id, lambda s: s.phase == "queued")
        deadline = time.monotonic() + 20
        while len(await list_deliveries(client, app, running_only=True)) < 2:  # visibility catches up
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

        async with http(gateway) as web:

            async def run(text: str, **headers_override: Any) -> httpx.Response:
                body = command_body(text)
                return await web.post(
                    "/slack/commands", content=body, headers=signed(body, **headers_override)
                )

            paused = await run(f"pause {app} incident 42")
            assert paused.status_code == 200 and paused.json()["response_type"] == "in_channel", paused.text
            for plan in plans:
                assert f"`{plan.delivery_id}`: paused {plan.delivery_id}" in paused.json()["text"]
                status = await get_status(client, plan.delivery_id)
                assert status.paused and status.pause_reason == "incident 42"
                assert (status.actions[-1].kind, status.actions[-1].actor) == ("pause", "U0ONCALL")

            listing = (await run(f"status {app}")).json()
            assert listing["response_type"] == "ephemeral"
            assert (
                all(plan.delivery_id in listing["text"] for plan in plans)
                and listing["text"].count("*paused*") == 2
            )

            resumed = (await run(f"resume {app}")).json()
            assert resumed["response_type"] == "in_channel"
            for plan in plans:
                assert not (await get_status(client, plan.delivery_id)).paused

            for text, expected in (
                ("help", "/aicd pause APP"),
                ("", "/aicd pause APP"),
                ("frobnicate now", "Unknown command `frobnicate`"),
                ("pause no-such-app", "No running delivery of *no-such-app*"),
                ("pause", "Usage: `/aicd pause APP`"),
                (f"approve {plans[0].delivery_id} staging", "has no approval pending"),
            ):
                answer = (await run(text)).json()
                assert answer["response_type"] == "ephemeral" and expected in answer["text"], (text, answer)
            stale = await run(f"pause {app}", age_s=400)
            assert stale.status_code == 401
            for plan in plans:
                assert not (await get_status(client, plan.delivery_id)).paused

            # The Abort button (behind a confirm dialog in Slack) ends a delivery as the clicking user.
            message = await slack.wait_for(
                lambda: next(
                    (
                        m
                        for m in slack.top_level()
                        if plans[0].delivery_id in json.dumps(m.blocks) and "abort" in json.dumps(m.blocks)
                    ),
                    None,
                )
            )
            body = click_body(message, "abort", "U0ONCALL", "oncall")
            assert (
                await web.post("/slack/interactions", content=body, headers=signed(body))
            ).status_code == 200
            aborted = await handle_for(client, plans[0].delivery_id).result()
            assert aborted.phase == "aborted" and "U0ONCALL" in aborted.reason
        await client.get_workflow_handle(plans[1].delivery_id).terminate("test over")


async def test_a_username_never_stands_in_for_an_approver(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    approver, mallory = "U0APPROVER2", "U0MALLORY"
    stage = {
        "name": "production",
        "targets": ["web"],
        "approval": {"approvers": [approver], "timeout": "1h"},
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
    }
    document, _, revision = app_spec(
        tmp_path, "spoofed", stages=[stage], notifications={"slack": {"channel": "#deploys"}}
    )
    plan = build_plan(load_spec(write_spec(tmp_path / "specs", document)), revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = slack_gateway(client, tmp_path / "specs", queue, slack)
        message = await approval_message(client, plan, queue, slack)
        async with http(gateway) as web:
            # Mallory's signed click, with the approver's ID as her username and name: refused as hers.
            body = click_body(message, "approve", mallory, approver)
            assert (
                await web.post("/slack/interactions", content=body, headers=signed(body))
            ).status_code == 200
            (ephemeral,) = await slack.wait_for(lambda: slack.ephemerals)
            assert ephemeral["user"] == mallory and f"{mallory} is not an approver" in ephemeral["text"]

            # The same with `/aicd approve` and the approver's ID as user_name.
            command = f"approve {plan.delivery_id} production"
            body = command_body(command, user_id=mallory, user_name=approver)
            answer = (await web.post("/slack/commands", content=body, headers=signed(body))).json()
            assert (
                answer["response_type"] == "ephemeral" and f"{mallory} is not an approver" in answer["text"]
            )
            status = await get_status(client, plan.delivery_id)
            assert status.approvals == {} and status.pending_approval == "production" and status.actions == []

            # The approver's own command counts, recorded as the user who typed it.
            body = command_body(command, user_id=approver, user_name="someone-else")
            answer = (await web.post("/slack/commands", content=body, headers=signed(body))).json()
            assert answer["response_type"] == "in_channel", answer
            result = await handle_for(client, plan.delivery_id).result()
        final = await get_status(client, plan.delivery_id)
    assert result.phase == "succeeded", result.reason
    assert [(a.kind, a.actor) for a in final.actions] == [("approve", approver)]
    first_step = commits(document["spec"]["gitops"]["repo"])[1]
    assert first_step["Aicd-Actor"] == approver  # the approved stage's first commit names who approved


DENY_STAGING = 'package aicd.delivery\n\nimport rego.v1\n\ndeny contains "staging is closed" if input.stage.name == "staging"\n'


async def test_override_from_slack_only_by_a_listed_person_with_a_reason(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    """A stage held by a policy: the Slack message names who may override and how; `/aicd override` by
    someone not listed, or without a reason, changes nothing; by a listed person it lets the stage through,
    recorded as that Slack user with the reason."""
    app = f"ovr-{uuid.uuid4().hex[:6]}"
    source, revision = make_repo(tmp_path, f"{app}-source", {"README": "x\n"})
    gitops, _ = make_repo(
        tmp_path, f"{app}-gitops", {"web.yaml": "image:\n  tag: v0\n", "policies/closed.rego": DENY_STAGING}
    )
    document = spec_document(
        app,
        source,
        gitops,
        {"web": {"kind": "git", "path": "web.yaml"}},
        [{"name": "staging", "targets": ["web"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
        notifications={"slack": {"channel": "#deploys"}},
        policy={"modules": ["policies/"], "overriders": [APPROVER], "recheck": "1h"},
    )
    plan = build_plan(load_spec(write_spec(tmp_path / "specs", document)), revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = make_gateway(
            client, tmp_path / "specs", queue, slack_bot_token=GATEWAY_TOKEN, slack_api_url=slack.base_url
        )
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "held")
        hint = f"/aicd override {plan.delivery_id} REASON"
        await slack.wait_for(lambda: any(hint in json.dumps(m.blocks) for m in slack.top_level()))
        async with http(gateway) as web:

            async def run(text: str, user_id: str) -> dict[str, Any]:
                body = command_body(text, user_id)
                answer = await web.post("/slack/commands", content=body, headers=signed(body))
                assert answer.status_code == 200, answer.text
                result: dict[str, Any] = answer.json()
                return result

            refused = await run(f"override {plan.delivery_id} trust me", CAROL)
            assert refused["response_type"] == "ephemeral" and "Not done" in refused["text"], refused
            usage = await run(f"override {plan.delivery_id}", APPROVER)
            assert "Usage: `/aicd override DELIVERY REASON`" in usage["text"]
            assert (await get_status(client, plan.delivery_id)).phase == "held"

            done = await run(f"override {plan.delivery_id} hotfix for INC-7", APPROVER)
            assert done["response_type"] == "in_channel" and "hotfix for INC-7" in done["text"], done
            result = await handle_for(client, plan.delivery_id).result()
            status = await get_status(client, plan.delivery_id)
    assert result.phase == "succeeded", result.reason
    override = [action for action in status.actions if action.kind == "override"]
    assert [(a.actor, a.reason, a.via) for a in override] == [(APPROVER, "hotfix for INC-7", "slack")]
    assert len(commits(gitops)) > 1  # the stage went out


def button_body(
    delivery_id: str, action_id: str, user_id: str, action_ts: str, team: str = "T0", user_team: str = ""
) -> bytes:
    """A click on a delivery's button as Slack signs it; every click has its own `action_ts`. `user_team`: the
    clicker's own workspace when it is not the one clicked in (an external member of a shared channel)."""
    payload = {
        "type": "block_actions",
        "team": {"id": team, "domain": "acme"},
        "user": {"id": user_id, "team_id": user_team or team},
        "container": {"type": "message", "channel_id": "C0DEPLOYS"},
        "actions": [{"action_id": action_id, "value": action_value(delivery_id), "action_ts": action_ts}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


async def test_requests_from_another_slack_workspace_are_not_acted_on(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """An app installed in several workspaces gets requests from all of them signed with one secret: with
    AICD_SLACK_TEAMS set, a click or command from another workspace is refused before anything reaches
    Temporal, even from a user ID that is an operator here."""
    with pytest.raises(ValueError, match="AICD_SLACK_TEAMS: 'acme' is not a Slack workspace ID"):
        slack_teams("T0, acme")
    stage = {
        "name": "production",
        "targets": ["web"],
        "approval": {"approvers": [APPROVER], "timeout": "1h"},
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
    }
    document, _, revision = app_spec(tmp_path, "workspaces", stages=[stage])
    plan = build_plan(load_spec(write_spec(tmp_path / "specs", document)), revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = make_gateway(
            client,
            tmp_path / "specs",
            queue,
            slack_operators=frozenset({"U0ONCALL"}),
            slack_teams=slack_teams("T0,E0GRID"),
        )
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "production")
        async with http(gateway) as web:
            body = button_body(plan.delivery_id, "pause", "U0ONCALL", "1.1", team="T9OTHER")
            refused = await web.post("/slack/interactions", content=body, headers=signed(body))
            assert refused.status_code == 403 and "AICD_SLACK_TEAMS" in refused.json()["error"], refused.text
            # In an allowed workspace, by a member of another one (Slack Connect): refused too.
            body = button_body(plan.delivery_id, "pause", "U0ONCALL", "1.2", user_team="T9OTHER")
            refused = await web.post("/slack/interactions", content=body, headers=signed(body))
            assert refused.status_code == 403 and "T9OTHER" in refused.json()["error"], refused.text
            command = command_body(f"pause {plan.delivery_id}", team="T9OTHER")
            refused = await web.post("/slack/commands", content=command, headers=signed(command))
            assert refused.status_code == 403, refused.text
            body = button_body(plan.delivery_id, "pause", "U0ONCALL", "2.2")
            assert (
                await web.post("/slack/interactions", content=body, headers=signed(body))
            ).status_code == 200
            await wait_for(client, plan.delivery_id, lambda s: s.paused)
            metrics = (await web.get("/metrics")).text
        status = await get_status(client, plan.delivery_id)
        await handle_for(client, plan.delivery_id).terminate("test over")
    assert [(a.kind, a.actor) for a in status.actions] == [("pause", "U0ONCALL")]
    for endpoint in ("interactions", "commands"):
        line = f'aicd_slack_requests_refused_total{{endpoint="{endpoint}",reason="other_workspace"}}'
        assert metric(metrics, line) == {"interactions": 2, "commands": 1}[endpoint], endpoint


async def test_a_replayed_slack_request_is_refused(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """A signed request seen on its way (a proxy's log, say) and sent again inside the five-minute window is
    refused: replaying someone's earlier Resume must not resume a delivery that on-call paused since, and a
    replayed command does not run twice."""
    stage = {
        "name": "production",
        "targets": ["web"],
        "approval": {"approvers": [APPROVER], "timeout": "1h"},
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
    }
    document, _, revision = app_spec(tmp_path, "replayed", stages=[stage])
    plan = build_plan(load_spec(write_spec(tmp_path / "specs", document)), revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = make_gateway(
            client, tmp_path / "specs", queue, slack_operators=frozenset({"U0ONCALL", "U0DEV"})
        )
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "production")
        async with http(gateway) as web:

            async def click(kind: str, user_id: str, action_ts: str) -> tuple[bytes, dict[str, str]]:
                body = button_body(plan.delivery_id, kind, user_id, action_ts)
                headers = signed(body)
                answer = await web.post("/slack/interactions", content=body, headers=headers)
                assert answer.status_code == 200, answer.text
                return body, headers

            await click("pause", "U0ONCALL", "1.1")
            await wait_for(client, plan.delivery_id, lambda s: s.paused)
            resume = await click("resume", "U0DEV", "2.2")
            await wait_for(client, plan.delivery_id, lambda s: not s.paused)
            await click("pause", "U0ONCALL", "3.3")
            await wait_for(client, plan.delivery_id, lambda s: s.paused)

            replayed = await web.post("/slack/interactions", content=resume[0], headers=resume[1])
            assert replayed.status_code == 401 and "replayed" in replayed.json()["error"], replayed.text
            command = command_body(f"approve {plan.delivery_id} production", user_id=APPROVER)
            headers = signed(command)
            assert (await web.post("/slack/commands", content=command, headers=headers)).status_code == 200
            again = await web.post("/slack/commands", content=command, headers=headers)
            assert again.status_code == 401 and "replayed" in again.json()["error"], again.text
            metrics = (await web.get("/metrics")).text
        status = await get_status(client, plan.delivery_id)
        await handle_for(client, plan.delivery_id).terminate("test over")
    assert status.paused
    assert [(a.kind, a.actor) for a in status.actions] == [
        ("pause", "U0ONCALL"),
        ("resume", "U0DEV"),
        ("pause", "U0ONCALL"),
        ("approve", APPROVER),
    ]
    for endpoint in ("interactions", "commands"):
        refused = f'aicd_slack_requests_refused_total{{endpoint="{endpoint}",reason="replayed_request"}}'
        assert metric(metrics, refused) == 1


async def test_a_slack_request_replayed_to_another_gateway_replica_is_acted_on_once(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Two gateway replicas behind one load balancer each remember the requests they saw, not the other's: a
    Resume seen on its way and sent again, to the replica that did not see it, inside the five-minute window,
    resumed a delivery on-call had paused since. Each request's updates carry its ID (a digest of its
    signature), so the server acts on it once, whichever replica it reaches."""
    stage = {
        "name": "production",
        "targets": ["web"],
        "approval": {"approvers": [APPROVER], "timeout": "1h"},
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
    }
    document, _, revision = app_spec(tmp_path, "replicas", stages=[stage])
    plan = build_plan(load_spec(write_spec(tmp_path / "specs", document)), revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        operators = frozenset({"U0ONCALL", "U0DEV"})
        one = make_gateway(client, tmp_path / "specs", queue, slack_operators=operators)
        two = make_gateway(client, tmp_path / "specs", queue, slack_operators=operators)
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "production")
        async with http(one) as first, http(two) as second:

            async def send(web: Any, endpoint: str, body: bytes, headers: dict[str, str]) -> None:
                answer = await web.post(f"/slack/{endpoint}", content=body, headers=headers)
                assert answer.status_code == 200, answer.text

            async def click(kind: str, user_id: str, action_ts: str) -> tuple[bytes, dict[str, str]]:
                body = button_body(plan.delivery_id, kind, user_id, action_ts)
                headers = signed(body)
                await send(first, "interactions", body, headers)
                await wait_for(client, plan.delivery_id, lambda s: s.paused == (kind == "pause"))
                return body, headers

            await click("pause", "U0ONCALL", "1.1")
            command = command_body(f"resume {plan.app}", user_id="U0DEV")
            command_headers = signed(command)
            await send(first, "commands", command, command_headers)
            await wait_for(client, plan.delivery_id, lambda s: not s.paused)
            await click("pause", "U0ONCALL", "3.3")
            await send(second, "commands", command, command_headers)  # this replica never saw it
            resume = await click("resume", "U0DEV", "4.4")
            await click("pause", "U0ONCALL", "5.5")
            await send(second, "interactions", *resume)
        await asyncio.sleep(1.0)  # the replayed click's background task has run
        status = await get_status(client, plan.delivery_id)
        await handle_for(client, plan.delivery_id).terminate("test over")
    assert status.paused, "the replayed Resume resumed the delivery on-call had paused"
    assert [(a.kind, a.actor) for a in status.actions] == [
        ("pause", "U0ONCALL"),
        ("resume", "U0DEV"),
        ("pause", "U0ONCALL"),
        ("resume", "U0DEV"),
        ("pause", "U0ONCALL"),
    ], status.actions


OPERATOR, MALLORY = "U0OPERATOR", "U0MALLORY"


async def test_only_approvers_and_operators_steer_from_slack(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    """Anyone in the workspace can type `/aicd` anywhere and click in a shared channel: resuming a `pause: {}`
    step is a promotion, so pause, resume and abort come only from the delivery's approvers and the Slack
    operators. Anyone else is told privately, and the delivery hears nothing; `*` lets anyone."""
    waits = [
        {"setWeight": 10},
        {"pause": {}},
        {"setWeight": 20},
        {"pause": {}},
        {"setWeight": 30},
        {"pause": {}},
    ]
    stage = {
        "name": "production",
        "targets": ["web"],
        "approval": {"approvers": [APPROVER], "timeout": "1h"},
        "strategy": {"canary": {"steps": [*waits, {"setWeight": 100}]}},
    }
    app = f"steer-{uuid.uuid4().hex[:6]}"
    document, _, revision = app_spec(
        tmp_path, app, stages=[stage], notifications={"slack": {"channel": "#deploys"}}
    )
    plan = build_plan(load_spec(write_spec(tmp_path / "specs", document)), revision)
    delivery = plan.delivery_id
    client = temporal_env.client

    def waiting_at(weight: int) -> Any:
        def holds(status: Any) -> bool:
            web = status.targets.get("web")
            return bool(web and web.state == "awaiting-resume" and web.weight == weight)

        return holds

    async with running_worker(client, tmp_path / "state") as queue:
        settings = {"slack_bot_token": GATEWAY_TOKEN, "slack_api_url": slack.base_url}
        gateway = make_gateway(
            client, tmp_path / "specs", queue, slack_operators=frozenset({OPERATOR}), **settings
        )
        anyone = make_gateway(client, tmp_path / "specs", queue, slack_operators=frozenset({"*"}), **settings)
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(client, delivery, lambda s: s.pending_approval == "production")
        await send_action(client, delivery, "approve", HumanAction(APPROVER, "ok", "production", via="slack"))
        await wait_for(client, delivery, waiting_at(10))
        await wait_for(client, delivery, lambda s: s.phase == "paused")
        async with http(gateway) as web, http(anyone) as open_web:

            async def click(server: httpx.AsyncClient, kind: str, user_id: str) -> None:
                body = button_body(delivery, kind, user_id, uuid.uuid4().hex)
                answer = await server.post("/slack/interactions", content=body, headers=signed(body))
                assert answer.status_code == 200, answer.text

            async def run(server: httpx.AsyncClient, text: str, user_id: str) -> dict[str, Any]:
                body = command_body(text, user_id=user_id)
                answer = await server.post("/slack/commands", content=body, headers=signed(body))
                assert answer.status_code == 200, answer.text
                result: dict[str, Any] = answer.json()
                return result

            # Not an approver, not an operator: the Resume and Abort buttons are refused privately...
            for kind in ("resume", "abort"):
                await click(web, kind, MALLORY)
            told = await slack.wait_for(lambda: slack.ephemerals if len(slack.ephemerals) == 2 else None)
            for ephemeral, kind in zip(told, ("resume", "abort"), strict=True):
                assert ephemeral["user"] == MALLORY and ephemeral["channel"] == "C0DEPLOYS"
                assert ephemeral["text"] == (
                    f":no_entry_sign: Not done: {MALLORY} is not an approver or a Slack operator,"
                    f" so may not {kind} {delivery}"
                )
            # ... and so is `/aicd` (typed in any channel or a DM), answered to her alone.
            for sub in ("resume", "pause"):
                answer = await run(web, f"{sub} {app}", MALLORY)
                assert answer["response_type"] == "ephemeral", answer
                assert answer["text"] == (
                    f":no_entry_sign: Not done: {MALLORY} is not an approver or a Slack operator,"
                    f" so may not {sub} {delivery}"
                )
            status = await get_status(client, delivery)
            assert status.phase == "paused" and not status.paused and waiting_at(10)(status)
            assert [(a.kind, a.actor) for a in status.actions] == [("approve", APPROVER)]
            assert slack.calls_of("chat.update", token=GATEWAY_TOKEN) == []

            # An operator (not an approver) resumes with `/aicd`, posted in the channel.
            resumed = await run(web, f"resume {app}", OPERATOR)
            assert resumed["response_type"] == "in_channel", resumed
            assert f"`{delivery}`: resumed {delivery}" in resumed["text"]
            await wait_for(client, delivery, waiting_at(20))

            # The delivery's approver (no operator) resumes with the button.
            await click(web, "resume", APPROVER)
            await wait_for(client, delivery, waiting_at(30))

            # AICD_SLACK_OPERATORS=*: anyone in the workspace, as before the rule.
            opened = await run(open_web, f"resume {app}", MALLORY)
            assert opened["response_type"] == "in_channel", opened
            result = await handle_for(client, delivery).result()
            metrics = (await web.get("/metrics")).text
        final = await get_status(client, delivery)
    assert result.phase == "succeeded", result.reason
    assert [(a.kind, a.actor, a.via) for a in final.actions] == [
        ("approve", APPROVER, "slack"),
        ("resume", OPERATOR, "slack"),
        ("resume", APPROVER, "slack"),
        ("resume", MALLORY, "slack"),
    ]
    assert len(slack.ephemerals) == 2  # Mallory's clicks; her commands were answered in the response
    for kind in ("resume", "abort"):
        assert (
            metric(metrics, f'aicd_slack_actions_total{{kind="{kind}",outcome="refused",via="button"}}') == 1
        )
    for kind in ("resume", "pause"):
        assert (
            metric(metrics, f'aicd_slack_actions_total{{kind="{kind}",outcome="refused",via="command"}}') == 1
        )


async def test_stop_the_line_acts_only_on_the_deliveries_the_user_may_steer(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    """`/aicd pause APP` checks each running delivery: Carol approves the newer release only (its plan lists
    her, the older one's does not), so that one pauses and the answer names the one refused."""
    stage = {
        "name": "production",
        "targets": ["web"],
        "approval": {"approvers": [APPROVER], "timeout": "1h"},
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
    }
    app = f"line-{uuid.uuid4().hex[:6]}"
    document, _, first = app_spec(tmp_path, app, stages=[stage], concurrency="queue")
    seed = tmp_path / f"{app}-source-seed"
    second = empty_commit(seed, "2")
    spec = load_spec(write_spec(tmp_path / "specs", document))
    older, newer = build_plan(spec, first), build_plan(spec, second)
    approval = newer.stages[0].approval
    assert approval is not None
    approval.approvers = [CAROL]  # the spec changed between the two releases
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = make_gateway(client, tmp_path / "specs", queue)
        for plan in (older, newer):
            await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        for plan in (older, newer):
            await wait_for(client, plan.delivery_id, lambda s: s.pending_approval == "production")
        deadline = time.monotonic() + 20
        while len(await list_deliveries(client, app, running_only=True)) < 2:  # visibility catches up
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        async with http(gateway) as web:
            body = command_body(f"pause {app} hold on", user_id=CAROL)
            answer = (await web.post("/slack/commands", content=body, headers=signed(body))).json()
        assert answer["response_type"] == "in_channel", answer
        assert f"`{newer.delivery_id}`: paused {newer.delivery_id}" in answer["text"]
        assert (
            f"`{older.delivery_id}`: refused: {CAROL} is not an approver or a Slack operator,"
            f" so may not pause {older.delivery_id}"
        ) in answer["text"]
        assert (await get_status(client, newer.delivery_id)).paused
        untouched = await get_status(client, older.delivery_id)
        assert not untouched.paused and untouched.actions == []
        for plan in (older, newer):
            await client.get_workflow_handle(plan.delivery_id).terminate("test over")


def test_slack_operators_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AICD_SLACK_OPERATORS: Slack user IDs or `*`; a name (which no click ever carries) stops the start."""
    monkeypatch.setenv(SLACK_OPERATORS_ENV, " U0ONCALL, W0ADMIN ,,")
    assert GatewaySettings.from_env(tmp_path).slack_operators == {"U0ONCALL", "W0ADMIN"}
    monkeypatch.setenv(SLACK_OPERATORS_ENV, "*")
    assert GatewaySettings.from_env(tmp_path).slack_operators == {"*"}
    monkeypatch.delenv(SLACK_OPERATORS_ENV)
    assert GatewaySettings.from_env(tmp_path).slack_operators == frozenset()
    monkeypatch.setenv(SLACK_OPERATORS_ENV, "U0ONCALL,oncall-payments")
    with pytest.raises(ValueError, match="AICD_SLACK_OPERATORS: 'oncall-payments' is not a Slack user ID"):
        GatewaySettings.from_env(tmp_path)


def test_slack_and_the_dashboard_apply_one_steering_rule() -> None:
    """aicd.steering decides for both front doors: the dashboard's refusal follows it, with its operators."""
    approvers = Roster.of((), [APPROVER, "oncall-payments"])
    cases = [
        (APPROVER, "resume", frozenset[str]()),
        (MALLORY, "resume", frozenset[str]()),
        (MALLORY, "pause", frozenset({MALLORY})),
        (MALLORY, "abort", frozenset({"*"})),
        (MALLORY, "approve", frozenset[str]()),  # the workflow's validators decide approvals
        ("u024be7lh", "pause", frozenset[str]()),  # exact match only
    ]
    expected = [True, False, True, True, True, False]
    # A Slack user ID is that approver only from Slack: a dashboard sign-in reading it is someone else.
    expected_on_the_dashboard = [False, False, True, True, True, False]
    for (identity, kind, operators), allowed, on_the_dashboard in zip(
        cases, expected, expected_on_the_dashboard, strict=True
    ):
        assert may_steer(identity, "slack", kind, approvers, operators) is allowed, (
            identity,
            kind,
            operators,
        )
        refusal = steering_refusal(
            Identity(identity, "session"), kind, approvers, DashboardSettings(operators=operators)
        )
        assert (refusal is None) is on_the_dashboard


def test_aicd_serve_refuses_a_name_among_the_slack_operators(tmp_path: Path) -> None:
    """A name would never match who clicks: `aicd serve` stops at once and says which setting is wrong."""
    (tmp_path / "specs").mkdir()
    env = {**os.environ, SLACK_OPERATORS_ENV: "U0ONCALL, oncall-payments"}
    command = [sys.executable, "-m", "aicd", "serve", "--specs", str(tmp_path / "specs"), "--port", "0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == EXIT_USAGE, done
    assert "AICD_SLACK_OPERATORS: 'oncall-payments' is not a Slack user ID" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
