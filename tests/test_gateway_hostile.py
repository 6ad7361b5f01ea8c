"""Hostile and broken requests at the gateway: every one gets a 4xx with a one-line reason, starts nothing,
leaves no traceback in the log and makes no new metric series. Deeply nested JSON (GitHub, GitLab, Slack),
signed Slack payloads of the wrong shape, a varied X-GitHub-Event header, exception text, a SHA with a
trailing newline and ref names Git itself refuses."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from aicd.plan import delivery_id
from aicd.testing.engine import temporal_env
from tests.test_gateway_slack import command_body, signed
from tests.test_gateway_webhooks import (
    GITLAB_TOKEN,
    app_spec,
    exists,
    github_headers,
    github_payload,
    http,
    make_gateway,
    write_spec,
)

__all__ = ["temporal_env"]

DEEP = 20_000  # far beyond the JSON parser's recursion limit; form-encoded still under the 1 MiB body cap


def assert_clean_refusal(
    answer: httpx.Response, status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert reason in error and "\n" not in error and len(error) < 300, error
    assert not [record for record in caplog.records if record.exc_info], caplog.text
    assert "Traceback" not in caplog.text


def series(metrics: str, name: str) -> list[str]:
    """The series of `name` that counted something (every fixed series exists from the start at zero)."""
    return [
        line.removesuffix(".0")
        for line in metrics.splitlines()
        if line.startswith(name + "{") and float(line.rsplit(" ", 1)[1]) != 0
    ]


def all_series(metrics: str) -> int:
    return sum(1 for line in metrics.splitlines() if line and not line.startswith("#"))


@pytest.fixture
def hooked(temporal_env: WorkflowEnvironment, tmp_path: Path) -> tuple[Any, str, str]:
    """A gateway serving one spec (its deliveries go to a queue nobody polls), its source repo, a revision."""
    document, source, revision = app_spec(tmp_path, "hostile")
    write_spec(tmp_path / "specs", document)
    gateway = make_gateway(temporal_env.client, tmp_path / "specs", f"nobody-{uuid.uuid4().hex[:8]}")
    return gateway, source, revision


async def test_deep_json_is_a_400_everywhere(
    hooked: tuple[Any, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway, _, _ = hooked
    deep_array, deep_object = b"[" * DEEP, b'{"a":' * DEEP
    caplog.set_level(logging.DEBUG)
    async with http(gateway) as web:
        for body in (deep_array, deep_object):
            answer = await web.post("/hooks/github", content=body, headers=github_headers(body))
            assert_clean_refusal(answer, 400, "malformed JSON: nested too deeply", caplog)
            form = urlencode({"payload": body.decode()}).encode()
            headers = {**github_headers(form), "content-type": "application/x-www-form-urlencoded"}
            answer = await web.post("/hooks/github", content=form, headers=headers)
            assert_clean_refusal(answer, 400, "nested too deeply", caplog)
            answer = await web.post(
                "/hooks/gitlab",
                content=body,
                headers={"content-type": "application/json", "x-gitlab-token": GITLAB_TOKEN},
            )
            assert_clean_refusal(answer, 400, "nested too deeply", caplog)
            slack = urlencode({"payload": body.decode()}).encode()
            answer = await web.post("/slack/interactions", content=slack, headers=signed(slack))
            assert_clean_refusal(answer, 400, "malformed payload: nested too deeply", caplog)


def click(**override: Any) -> dict[str, Any]:
    value = json.dumps({"delivery": "delivery-hostile-0123456789ab", "stage": "production"})
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0APPROVER", "username": "approver"},
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0DEPLOYS"},
        "channel": {"id": "C0DEPLOYS"},
        "actions": [{"action_id": "approve", "value": value, "type": "button"}],
    }
    payload.update(override)
    return payload


BAD_SLACK_PAYLOADS: list[tuple[str, dict[str, Any] | str, str]] = [
    ("no actions", click(actions=[]), "actions is not a non-empty list"),
    ("actions an object", click(actions={"action_id": "approve"}), "actions is not a non-empty list"),
    ("action a string", click(actions=["approve"]), "actions is not a non-empty list"),
    (
        "action_id a list",
        click(actions=[{"action_id": ["approve"], "value": "{}"}]),
        "action_id is not a string",
    ),
    ("value missing", click(actions=[{"action_id": "approve"}]), "value is missing"),
    (
        "value not JSON",
        click(actions=[{"action_id": "approve", "value": "{nope"}]),
        "malformed actions[0].value",
    ),
    ("value a list", click(actions=[{"action_id": "approve", "value": "[1]"}]), "expected an object"),
    (
        "value nested deeply",
        click(actions=[{"action_id": "approve", "value": "[" * DEEP}]),
        "actions[0].value: nested too deeply",
    ),
    (
        "delivery a number",
        click(actions=[{"action_id": "approve", "value": '{"delivery": 7}'}]),
        "delivery is not a string",
    ),
    (
        "delivery not an ID",
        click(actions=[{"action_id": "approve", "value": '{"delivery": "delivery-x-0123456\\n"}'}]),
        "not a delivery ID",
    ),
    (
        "stage an object",
        click(actions=[{"action_id": "approve", "value": '{"delivery": "delivery-x-0123456", "stage": {}}'}]),
        "stage is not a string",
    ),
    ("channel a string", click(channel="C0DEPLOYS"), "channel is not an object"),
    ("container a list", click(channel=None, container=["C0"]), "container is not an object"),
    ("user missing", click(user=None), "user.id is missing"),
    ("user a string", click(user="U0APPROVER"), "user is not an object"),
    ("user id a name", click(user={"id": "mallory"}), "is not a Slack user ID"),
    ("payload a list", "[1, 2]", "malformed payload: expected an object"),
    ("payload not JSON", "{nope", "malformed payload"),
]


@pytest.mark.parametrize(
    ("name", "payload", "reason"), BAD_SLACK_PAYLOADS, ids=[c[0] for c in BAD_SLACK_PAYLOADS]
)
async def test_signed_slack_payloads_of_the_wrong_shape_are_a_400(
    hooked: tuple[Any, str, str], caplog: pytest.LogCaptureFixture, name: str, payload: Any, reason: str
) -> None:
    gateway, _, _ = hooked
    caplog.set_level(logging.DEBUG)
    text = payload if isinstance(payload, str) else json.dumps(payload)
    body = urlencode({"payload": text}).encode()
    async with http(gateway) as web:
        answer = await web.post("/slack/interactions", content=body, headers=signed(body))
    assert_clean_refusal(answer, 400, reason, caplog)


async def test_slash_commands_need_a_slack_user_id(
    hooked: tuple[Any, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway, _, _ = hooked
    caplog.set_level(logging.DEBUG)
    async with http(gateway) as web:
        for user_id in ("", "mallory", "U0MALLORY\n", "U0MALLORY and more"):
            body = command_body("status hostile", user_id=user_id, user_name="U0APPROVER")
            answer = await web.post("/slack/commands", content=body, headers=signed(body))
            assert_clean_refusal(answer, 400, "user_id is not a Slack user ID", caplog)


async def test_labels_come_from_fixed_sets(hooked: tuple[Any, str, str]) -> None:
    gateway, source, revision = hooked
    async with http(gateway) as web:
        before = (await web.get("/metrics")).text
        body = json.dumps(github_payload(source, "refs/heads/release/1", revision)).encode()
        for n in range(20):  # the unsigned event header, replayed with 20 values
            headers = github_headers(body, event=f"evil-{n}-{uuid.uuid4().hex}")
            answer = await web.post("/hooks/github", content=body, headers=headers)
            assert answer.status_code == 200 and answer.json()["result"] == "ignored"
            assert "evil" not in answer.text
        for n in range(20):  # bodies whose parse errors all read differently
            broken = b'{"ref": ' + b" " * n + b"}"
            assert (
                await web.post("/hooks/github", content=broken, headers=github_headers(broken))
            ).status_code == 400
            slack = urlencode({"payload": "{" + " " * n + "x"}).encode()
            assert (
                await web.post("/slack/interactions", content=slack, headers=signed(slack))
            ).status_code == 400
        metrics = (await web.get("/metrics")).text
    assert all_series(metrics) == all_series(before)  # forty odd requests made no new series
    assert "evil" not in metrics and "char" not in metrics and "Expecting" not in metrics
    assert series(metrics, "aicd_webhooks_ignored_total") == [
        'aicd_webhooks_ignored_total{provider="github",reason="not_a_push"} 20'
    ]
    assert series(metrics, "aicd_webhooks_refused_total") == [
        'aicd_webhooks_refused_total{provider="github",reason="malformed_json"} 20'
    ]
    assert series(metrics, "aicd_slack_requests_refused_total") == [
        'aicd_slack_requests_refused_total{endpoint="interactions",reason="malformed_payload"} 20'
    ]
    gateway.metrics.inc("aicd_webhooks_refused_total", provider="bitbucket", reason="made up")
    assert gateway.metrics.value("aicd_webhooks_refused_total", provider="other", reason="other") == 1


async def test_sha_with_a_trailing_newline_is_a_400(
    temporal_env: WorkflowEnvironment, hooked: tuple[Any, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway, source, revision = hooked
    caplog.set_level(logging.DEBUG)
    async with http(gateway) as web:
        for after in (revision + "\n", revision + "\r\n", " " + revision):
            body = json.dumps(github_payload(source, "refs/heads/release/1", after)).encode()
            answer = await web.post("/hooks/github", content=body, headers=github_headers(body))
            assert_clean_refusal(answer, 400, "after is not a commit SHA", caplog)
    assert not await exists(temporal_env.client, delivery_id("hostile", revision))


BAD_REFS = [
    "refs/heads/release/$(touch /tmp/aicd-pwned)",
    "refs/heads/release/a..b",
    "refs/heads/release/a\x01b",
    "refs/heads/release/a\x7f",
    "refs/heads/release/x@{1}",
    "refs/heads/release/x.lock",
    "refs/heads/-release/x",
    "refs/heads/release/x.",
    "refs/heads/release//x",
    "refs/heads/release/a b",
    "refs/heads/release/a~1",
    "refs/heads/release/a^",
    "refs/heads/release/a:b",
    "refs/heads/release/a?",
    "refs/heads/release/a*",
    "refs/heads/release/a[",
    "refs/heads/release/a\\b",
    "refs/heads/release/.x",
    "refs/heads/HEAD",
]


async def test_refs_git_refuses_are_a_400_and_start_nothing(
    temporal_env: WorkflowEnvironment, hooked: tuple[Any, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway, source, revision = hooked
    caplog.set_level(logging.DEBUG)
    async with http(gateway) as web:
        for ref in BAD_REFS:
            body = json.dumps(github_payload(source, ref, revision)).encode()
            headers = github_headers(body)
            answer = await web.post("/hooks/github", content=body, headers=headers)
            assert_clean_refusal(answer, 400, "invalid ref", caplog)
            # Forgotten by the replay memory: a fixed sender may redeliver the same event.
            assert not gateway.replays.seen(f"github:{headers['x-github-delivery']}")
            gitlab = {
                "object_kind": "push",
                "ref": ref,
                "before": "2" * 40,
                "after": revision,
                "checkout_sha": revision,
                "project": {"git_http_url": source},
            }
            answer = await web.post(
                "/hooks/gitlab",
                content=json.dumps(gitlab).encode(),
                headers={"content-type": "application/json", "x-gitlab-token": GITLAB_TOKEN},
            )
            assert_clean_refusal(answer, 400, "invalid ref", caplog)
        metrics = (await web.get("/metrics")).text
    assert not await exists(temporal_env.client, delivery_id("hostile", revision))
    assert not Path("/tmp/aicd-pwned").exists()
    assert 'aicd_webhooks_refused_total{provider="github",reason="invalid_ref"} 19' in metrics
    assert "\x01" not in caplog.text  # the ref is quoted with its control characters escaped
