"""Incident hooks end to end: a failed delivery triggers a PagerDuty alert (dedup_key = its ID) and a signed
CloudEvent, a later successful delivery of the app resolves it; the stand-in checks the Events v2 and
CloudEvents request shapes and the HMAC, and answering 500 at first shows the hooks are retried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from aicd.activities.incidents import PAGERDUTY_URL_ENV, sign
from aicd.client import handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger
from aicd.testing.engine import make_repo, plan_from, running_worker, spec_document, temporal_env
from aicd.testing.standins.incidents import IncidentStandin, pagerduty_errors

__all__ = ["temporal_env"]

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, as PagerDuty's integration keys
SECRET = "whsec-test"


@pytest_asyncio.fixture
async def standin(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[IncidentStandin]:
    server = IncidentStandin(webhook_secret=SECRET)
    await server.start()
    monkeypatch.setenv(PAGERDUTY_URL_ENV, server.pagerduty_url)
    monkeypatch.setenv("TEST_PD_KEY", ROUTING_KEY)
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    yield server
    await server.stop()


def incident_spec(tmp_path: Path, standin: IncidentStandin, **extra: Any) -> tuple[dict[str, Any], str]:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": "image:\n  tag: v0\n"})
    notifications = {
        "pagerduty": {"routingKey": {"env": "TEST_PD_KEY"}, "severity": "critical"},
        "webhook": {"url": standin.webhook_url, "secret": {"env": "TEST_HOOK_SECRET"}},
    }
    document = spec_document(
        "shop",
        source,
        gitops,
        {"web": {"kind": "git", "path": "apps/web/values.yaml"}},
        [{"name": "staging", "targets": ["web"]}],
        notifications=notifications,
        **extra,
    )
    return document, revision


async def test_failure_triggers_and_a_later_success_resolves(
    temporal_env: WorkflowEnvironment, tmp_path: Path, standin: IncidentStandin
) -> None:
    client = temporal_env.client
    failing, revision = incident_spec(
        tmp_path,
        standin,
        build={"command": ["false"], "artifact": "registry.example.com/shop:{{ revision.short }}"},
    )
    passing = {**failing, "spec": {k: v for k, v in failing["spec"].items() if k != "build"}}
    standin.fail_next(2)  # PagerDuty and the webhook down for a moment: retried, the delivery not held
    async with running_worker(client, tmp_path / "state") as queue:
        first = await start_delivery(client, plan_from(failing, revision), Trigger("cli", "t"), queue=queue)
        assert (await handle_for(client, first.delivery_id).result()).phase == "failed"
        await standin.wait_for(lambda: first.delivery_id in standin.open_alerts)
        second = await start_delivery(client, plan_from(passing, revision), Trigger("cli", "t"), queue=queue)
        assert (await handle_for(client, second.delivery_id).result()).phase == "succeeded"
        await standin.wait_for(lambda: first.delivery_id not in standin.open_alerts)
    assert standin.refused == []
    trigger = next(event for event in standin.events if event["event_action"] == "trigger")
    assert pagerduty_errors(trigger) == []
    assert trigger["dedup_key"] == first.delivery_id and trigger["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "aicd/shop"
    assert "build failed" in trigger["payload"]["summary"]
    resolves = [event for event in standin.events if event["event_action"] == "resolve"]
    assert [event["dedup_key"] for event in resolves] == [second.delivery_id, first.delivery_id]
    kinds = [(event["type"], event["subject"]) for event in standin.cloud_events]
    assert ("dev.aicd.delivery.failed", first.delivery_id) in kinds
    assert ("dev.aicd.delivery.succeeded", second.delivery_id) in kinds


def test_signature_is_hmac_sha256_of_the_body() -> None:
    # The value a receiver computes with `echo -n body | openssl dgst -sha256 -hmac secret`.
    assert sign("key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_standin_refuses_what_pagerduty_refuses() -> None:
    assert pagerduty_errors({"routing_key": "short", "event_action": "trigger", "payload": {}}) == [
        "routing_key must be a 32-character string",
        "payload.summary must be 1 to 1024 characters",
        "payload.source is required",
        "payload.severity must be one of ['critical', 'error', 'info', 'warning']",
    ]
    assert pagerduty_errors({"routing_key": ROUTING_KEY, "event_action": "resolve"}) == [
        "dedup_key is required for resolve"
    ]


async def test_waiting_too_long_for_approval_raises_an_incident_once(
    temporal_env: WorkflowEnvironment, tmp_path: Path, standin: IncidentStandin
) -> None:
    client = temporal_env.client
    document, revision = incident_spec(tmp_path, standin)
    document["spec"]["notifications"]["waitingTooLong"] = "2s"
    document["spec"]["stages"][0]["approval"] = {"approvers": ["alice"], "timeout": "1h"}
    plan = plan_from(document, revision)
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await standin.wait_for(lambda: plan.delivery_id in standin.open_alerts)
        alert = standin.open_alerts[plan.delivery_id]
        assert "awaiting approval for 2s" in alert["payload"]["summary"]
        assert alert["payload"]["class"] == "delivery waiting"
        await send_action(client, plan.delivery_id, "approve", HumanAction("alice", stage="staging"))
        assert (await handle_for(client, plan.delivery_id).result()).phase == "succeeded"
    # Raised once while it waited; its success resolves it.
    mine = [event["event_action"] for event in standin.events if event.get("dedup_key") == plan.delivery_id]
    assert mine == ["trigger", "resolve"]
    assert plan.delivery_id not in standin.open_alerts
