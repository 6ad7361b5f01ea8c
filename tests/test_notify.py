"""Slack notifications through the real slack-sdk against the loopback stand-in: one message per delivery,
updated in place even across a worker restart, thread replies per step, the approval request with its
buttons, an alert naming the reason on failure, and Slack being down never holding up a delivery."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd.activities import WorkerSettings
from aicd.client import handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger
from aicd.slack_blocks import delivery_message
from aicd.testing.engine import make_repo, plan_from, spec_document, temporal_env, wait_for
from aicd.testing.standins.slack import Message, SlackStandIn
from aicd.worker import build_worker

__all__ = ["temporal_env"]

APPROVER = "U024BE7LH"
VALUES = "image:\n  tag: v0\n"


@pytest.fixture
async def slack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackStandIn]:
    standin = SlackStandIn()
    await standin.start()
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", standin.base_url)
    yield standin
    await standin.stop()


@asynccontextmanager
async def worker_on(client: Client, state_dir: Path, queue: str) -> AsyncIterator[None]:
    async with build_worker(client, WorkerSettings(state_dir=state_dir), queue):
        yield


def slack_spec(
    tmp_path: Path, *, approval: bool = True, tests: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], str]:
    # Unique content: two seed commits made in the same second would otherwise be the same revision.
    source, revision = make_repo(tmp_path, "source", {"README": f"{uuid.uuid4()}\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"staging.yaml": VALUES, "prod.yaml": VALUES})
    production: dict[str, Any] = {
        "name": "production",
        "targets": ["prod"],
        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
    }
    if approval:
        production["approval"] = {"approvers": [APPROVER, "oncall-payments"], "timeout": "1h"}
    document = spec_document(
        "shop",
        source,
        gitops,
        {"staging": {"kind": "git", "path": "staging.yaml"}, "prod": {"kind": "git", "path": "prod.yaml"}},
        [
            {
                "name": "staging",
                "targets": ["staging"],
                "strategy": {"canary": {"steps": [{"setWeight": 50}, {"setWeight": 100}]}},
            },
            production,
        ],
        notifications={"slack": {"channel": "#deploys"}},
    )
    if tests:
        document["spec"]["test"] = tests
    return document, revision


def buttons(message: Message) -> dict[str, dict[str, Any]]:
    return {e["action_id"]: e for b in message.blocks if b["type"] == "actions" for e in b["elements"]}


def block_text(message: Message) -> str:
    return json.dumps(message.blocks)


async def test_one_message_updated_in_place_across_a_worker_restart(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    document, revision = slack_spec(tmp_path)
    plan = plan_from(document, revision)
    client = temporal_env.client
    queue = f"notify-{revision[:8]}"
    trigger = Trigger("github", "alice", "release/1.2", detail=f"1111111..{revision[:7]}")
    async with worker_on(client, tmp_path / "state-a", queue):
        await start_delivery(client, plan, trigger, queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "awaiting-approval")
        message = await slack.wait_for(
            lambda: next((m for m in slack.top_level() if "approve" in buttons(m)), None)
        )
    # The first worker is gone; a new one (new cache, replays the history) carries the delivery on.
    approve, reject = buttons(message)["approve"], buttons(message)["reject"]
    assert json.loads(approve["value"]) == {"delivery": plan.delivery_id, "stage": "production"}
    assert reject["confirm"]["confirm"]["text"] == "Reject" and "confirm" not in approve
    assert buttons(message)["abort"]["confirm"]
    text = block_text(message)
    for expected in (
        plan.artifact,
        f"1111111..{revision[:7]}",
        f"<@{APPROVER}>",
        "oncall-payments",
        "Analysis of the previous stage",
    ):
        assert expected in text, expected
    assert message.metadata == {
        "event_type": "aicd_delivery",
        "event_payload": {"delivery_id": plan.delivery_id},
    }
    staging_replies = [m.text for m in slack.replies(message.ts)]
    # A step the rollout does not wait on is no news (workflows.rollout_control.PROGRESS_IN_RESULT): the
    # target's replies are its start and its end, which came with the rollout's result.
    assert any("`staging` promoted" in r for r in staging_replies), staging_replies
    assert not any("setWeight" in r for r in staging_replies), staging_replies
    assert any("stage staging started" in r for r in staging_replies)
    assert any("awaits approval" in r and f"<@{APPROVER}>" in r for r in staging_replies)

    async with worker_on(client, tmp_path / "state-b", queue):
        await send_action(client, plan.delivery_id, "approve", HumanAction(APPROVER))
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded"
    assert len(slack.top_level()) == 1, [m.text for m in slack.top_level()]
    posts = slack.calls_of("chat.postMessage")
    assert len([c for c in posts if "thread_ts" not in c.args]) == 1
    updates = slack.calls_of("chat.update")
    assert updates and all(
        c.ok and c.args["ts"] == message.ts and c.args["channel"] == "C0DEPLOYS" for c in updates
    )
    assert all(c.token == "xoxb-test" for c in slack.calls)
    final = slack.messages[message.ts]
    assert "succeeded" in final.text and not buttons(final)
    replies = [m.text for m in slack.replies(message.ts)]
    assert any("`prod` promoted" in r for r in replies), replies
    assert any("succeeded" in r for r in replies) and not any(m.broadcast for m in slack.replies(message.ts))


async def test_failure_alert_names_the_reason(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    failing = [{"name": "unit", "command": [sys.executable, "-c", "import sys; sys.exit(3)"]}]
    document, revision = slack_spec(tmp_path, approval=False, tests=failing)
    plan = plan_from(document, revision)
    client = temporal_env.client
    queue = f"notify-{revision[:8]}"
    async with worker_on(client, tmp_path / "state", queue):
        await start_delivery(client, plan, Trigger("cli", "bob"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "failed"
    (message,) = slack.top_level()
    alerts = [m for m in slack.replies(message.ts) if m.broadcast]
    assert len(alerts) == 1 and "failed" in alerts[0].text and "unit exited with 3" in alerts[0].text, alerts
    assert ":x:" in slack.messages[message.ts].text or "failed" in slack.messages[message.ts].text


async def test_slack_down_never_blocks_or_fails_a_delivery(
    temporal_env: WorkflowEnvironment, slack: SlackStandIn, tmp_path: Path
) -> None:
    document, revision = slack_spec(tmp_path)
    plan = plan_from(document, revision)
    client = temporal_env.client
    queue = f"notify-{revision[:8]}"
    slack.fail_with(500)
    async with worker_on(client, tmp_path / "state", queue):
        await start_delivery(client, plan, Trigger("cli", "bob"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "awaiting-approval")
        await send_action(
            client, plan.delivery_id, "approve", HumanAction(APPROVER)
        )  # approvals need no Slack
        # The first notification is retried by Temporal while the delivery goes on.
        await slack.wait_for(lambda: len(slack.calls_of("chat.postMessage")) >= 2)
        await slack.stop()  # and now Slack is not even reachable
        await wait_for(client, plan.delivery_id, lambda s: s.phase == "succeeded")
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded"
    attempts = slack.calls_of("chat.postMessage")
    assert len(attempts) >= 2 and all(c.status == 500 for c in attempts)
    assert attempts[0].args["channel"] == attempts[1].args["channel"] == "#deploys"
    assert slack.messages == {}


def test_user_controlled_text_is_escaped() -> None:
    status = {
        "delivery_id": "delivery-shop-abc",
        "app": "shop",
        "revision": "a" * 40,
        "artifact": "reg/shop:aaaaaaa",
        "phase": "failed",
        "reason": "<!channel> broke & burned",
        "trigger": {"source": "github", "actor": "mallory <@U1>", "branch": "release/<!here>", "detail": ""},
        "targets": [],
    }
    text = json.dumps(delivery_message(status)[1])
    assert "<!channel>" not in text and "<!here>" not in text and "<@U1>" not in text
    assert "&lt;!channel&gt; broke &amp; burned" in text


def test_a_git_user_named_like_a_slack_id_is_not_a_mention() -> None:
    """Who pushed is the Git host's user name, which its owner chooses: a GitHub user called `U024BE7LH` (an
    approver's Slack ID) is shown as that text, never as a mention of the approver (who did not push)."""
    status = {
        "delivery_id": "delivery-shop-abc",
        "app": "shop",
        "revision": "a" * 40,
        "artifact": "reg/shop:aaaaaaa",
        "phase": "awaiting-approval",
        "trigger": {"source": "github", "actor": "U024BE7LH", "branch": "release/1", "detail": ""},
        "targets": [],
    }
    text = json.dumps(delivery_message(status)[1])
    assert "<@U024BE7LH>" not in text and "*Triggered by*\\nU024BE7LH (github)" in text
    # The CLI's --as may name a Slack user on purpose.
    cli = {**status, "trigger": {**status["trigger"], "source": "cli"}}
    assert "<@U024BE7LH>" in json.dumps(delivery_message(cli)[1])
