"""Git webhooks through the gateway app (in-process ASGI, and `aicd serve` under uvicorn): a signed push
to a release branch starts exactly one delivery; unsigned, wrongly signed, replayed, oversized, malformed,
tag and deletion pushes start nothing; branch names are data, never shell; specs reload and a broken one
does not stop the others."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from aicd.client import get_status, handle_for
from aicd.dev.ports import free_port
from aicd.gateway import Gateway, GatewaySettings, create_app
from aicd.gateway.signatures import sign_github
from aicd.gateway.specs import SpecDirectory, branch_matches, repo_key
from aicd.plan import delivery_id
from aicd.testing.engine import (
    branch_at,
    deliveries_of,
    git,
    make_repo,
    running_worker,
    spec_document,
    temporal_env,
)

__all__ = ["temporal_env"]

GITHUB_SECRET = "gh-" + uuid.uuid4().hex
GITLAB_TOKEN = "gl-" + uuid.uuid4().hex
SLACK_SECRET = "sl-" + uuid.uuid4().hex
ZERO = "0" * 40


# --- helpers shared with the Slack tests ---------------------------------------------------------------------
def write_spec(spec_dir: Path, document: dict[str, Any]) -> Path:
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / f"{document['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def app_spec(
    tmp_path: Path, name: str, *, stages: list[dict[str, Any]] | None = None, **extra: Any
) -> tuple[dict[str, Any], str, str]:
    """A one-target spec on fresh repos; returns (document, source repo, seed revision)."""
    source, revision = make_repo(tmp_path, f"{name}-source", {"README": f"{uuid.uuid4()}\n"})
    gitops, _ = make_repo(tmp_path, f"{name}-gitops", {"web.yaml": "image:\n  tag: v0\n"})
    document = spec_document(
        name,
        source,
        gitops,
        {"web": {"kind": "git", "path": "web.yaml"}},
        stages
        or [{"name": "staging", "targets": ["web"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
        **extra,
    )
    return document, source, revision


def make_gateway(client: Client, spec_dir: Path, queue: str | None, **overrides: Any) -> Gateway:
    secrets = {
        "github_secret": GITHUB_SECRET,
        "gitlab_token": GITLAB_TOKEN,
        "slack_signing_secret": SLACK_SECRET,
    }
    settings = GatewaySettings(specs_dir=spec_dir, task_queue=queue, **{**secrets, **overrides})
    return Gateway(settings, client=client)


@asynccontextmanager
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    await gateway.refresh_specs()
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def github_payload(
    repo: str, ref: str, after: str, *, before: str = "1" * 40, **extra: Any
) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "created": False,
        "deleted": False,
        "compare": f"https://github.example/o/r/compare/{before[:12]}...{after[:12]}",
        "repository": {
            "clone_url": repo,
            "ssh_url": "git@github.example:o/r.git",
            "html_url": "https://github.example/o/r",
        },
        "pusher": {"name": "alice", "email": "alice@example.com"},
        "sender": {"login": "alice"},
        **extra,
    }


def github_headers(
    body: bytes, *, event: str = "push", delivery: str | None = None, secret: str = GITHUB_SECRET
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "x-hub-signature-256": sign_github(secret, body),
    }


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
        return True
    except RPCError:
        return False


def metric(text: str, line: str) -> float:
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


# --- tests ----------------------------------------------------------------------------------------------------------
async def test_signed_push_starts_exactly_one_delivery(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    document, source, revision = app_spec(tmp_path, "hooked")
    write_spec(tmp_path / "specs", document)
    client = temporal_env.client
    branch_at(source, "release/1.2", revision)
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = make_gateway(client, tmp_path / "specs", queue)
        async with http(gateway) as web:
            body = json.dumps(github_payload(source, "refs/heads/release/1.2", revision)).encode()
            first_headers = github_headers(body)
            answers = [await web.post("/hooks/github", content=body, headers=first_headers)]
            for _ in range(2):  # GitHub sending the same push again (new delivery IDs)
                answers.append(await web.post("/hooks/github", content=body, headers=github_headers(body)))
            assert [a.status_code for a in answers] == [200, 200, 200]
            assert [a.json()["result"] for a in answers] == ["started", "already started", "already started"]
            delivery = answers[0].json()["deliveries"][0]["delivery_id"]
            assert delivery.startswith(delivery_id("hooked", revision) + "-")  # one ID per push event
            assert {a.json()["deliveries"][0]["delivery_id"] for a in answers} == {delivery}

            replay = await web.post("/hooks/github", content=body, headers=first_headers)
            assert replay.status_code == 200 and replay.json()["result"] == "ignored"
            assert "replayed delivery" in replay.json()["reason"]

            # Unsigned, wrongly signed, or signed over other bytes: 401 and nothing started.
            other = "ab" * 20
            forged = json.dumps(github_payload(source, "refs/heads/release/1.3", other)).encode()
            unsigned = {k: v for k, v in github_headers(forged).items() if k != "x-hub-signature-256"}
            wrong_secret = github_headers(forged, secret="not-the-secret")
            other_bytes = github_headers(body)  # a valid signature of another body
            for headers, reason in (
                (unsigned, "missing X-Hub-Signature-256"),
                (wrong_secret, "bad signature"),
                (other_bytes, "bad signature"),
            ):
                refused = await web.post("/hooks/github", content=forged, headers=headers)
                assert refused.status_code == 401 and refused.json() == {"error": reason}
            assert await deliveries_of(client, "hooked", other) == []

            result = await handle_for(client, delivery).result()
            status = await get_status(client, delivery)
            metrics = (await web.get("/metrics")).text
        assert result.phase == "succeeded"
        assert status.trigger is not None
        assert (status.trigger.source, status.trigger.actor, status.trigger.branch) == (
            "github",
            "alice",
            "release/1.2",
        )
        assert f"1111111..{revision[:7]}" in status.trigger.detail
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{delivery}'")]
        assert len(runs) == 1
    assert metric(metrics, 'aicd_gateway_deliveries_started_total{source="github"}') == 1
    assert metric(metrics, 'aicd_deliveries_already_started_total{source="github"}') == 2
    assert metric(metrics, 'aicd_webhooks_received_total{provider="github"}') == 7
    assert metric(metrics, 'aicd_webhooks_refused_total{provider="github",reason="bad_signature"}') == 2
    assert (
        metric(metrics, 'aicd_webhooks_refused_total{provider="github",reason="missing_x_hub_signature_256"}')
        == 1
    )
    assert metric(metrics, 'aicd_webhooks_refused_total{provider="github",reason="replayed"}') == 1


async def test_pushes_that_start_nothing(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    document, source, revision = app_spec(tmp_path, "quiet")
    write_spec(tmp_path / "specs", document)
    client = temporal_env.client
    gateway = make_gateway(
        client, tmp_path / "specs", f"nobody-{uuid.uuid4().hex[:8]}", max_body_bytes=64 * 1024
    )
    cases: list[tuple[dict[str, Any] | bytes, str, int, str]] = [
        (github_payload(source, "refs/tags/v1.2", revision), "push", 200, "not a branch"),
        (github_payload(source, "refs/heads/release/1.2", ZERO, deleted=True), "push", 200, "branch deleted"),
        (
            github_payload(source, "refs/heads/release/1.2", revision, deleted=True),
            "push",
            200,
            "branch deleted",
        ),
        (github_payload(source, "refs/heads/main", revision), "push", 200, "no spec"),
        (
            github_payload("https://elsewhere.example/o/other.git", "refs/heads/release/1.2", revision),
            "push",
            200,
            "no spec",
        ),
        (github_payload(source, "refs/heads/release/1.2", revision), "issues", 200, "only push"),
        (github_payload(source, "refs/heads/release/1.2", "not-a-sha"), "push", 400, "not a commit SHA"),
        (b'{"ref": "refs/heads/release/1.2", "after": ', "push", 400, "malformed JSON"),
        (b"[1, 2]", "push", 400, "malformed JSON"),
    ]
    async with http(gateway) as web:
        pong = await web.post("/hooks/github", content=b"{}", headers=github_headers(b"{}", event="ping"))
        assert pong.status_code == 200 and pong.json() == {"result": "pong"}
        for payload, event, status, reason in cases:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            answer = await web.post("/hooks/github", content=body, headers=github_headers(body, event=event))
            assert answer.status_code == status, (reason, answer.text)
            assert reason in answer.text, (reason, answer.text)
        # Too large: refused before the signature is even looked at, whether announced or streamed.
        big = b"{" + b" " * (64 * 1024) + b"}"
        too_big = await web.post("/hooks/github", content=big, headers=github_headers(big))
        assert too_big.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b" " * 1024

        streamed = await web.post(
            "/hooks/github",
            content=chunks(),
            headers={"x-github-event": "push", "x-hub-signature-256": "sha256=00"},
        )
        assert streamed.status_code == 413
        # Unsigned, or with a wrong GitLab token: refused from the headers alone, before the body is read.
        unsigned = await web.post("/hooks/github", content=chunks(), headers={"x-github-event": "push"})
        assert unsigned.status_code == 401 and "missing X-Hub-Signature-256" in unsigned.text
        wrong_token = await web.post(
            "/hooks/gitlab", content=chunks(), headers={"x-gitlab-token": "not-" + GITLAB_TOKEN}
        )
        assert wrong_token.status_code == 401 and "bad token" in wrong_token.text
        missing_secret = make_gateway(client, tmp_path / "specs", None, github_secret=None)
        async with http(missing_secret) as bare:
            body = json.dumps(github_payload(source, "refs/heads/release/1.2", revision)).encode()
            unconfigured = await bare.post("/hooks/github", content=body, headers=github_headers(body))
            assert unconfigured.status_code == 503
        metrics = (await web.get("/metrics")).text
    assert await deliveries_of(client, "quiet", revision) == []
    assert metric(metrics, 'aicd_gateway_deliveries_started_total{source="github"}') == 0
    assert metric(metrics, 'aicd_webhooks_refused_total{provider="github",reason="body_too_large"}') == 2


async def test_gitlab_push_with_token(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    document, source, revision = app_spec(tmp_path, "labbed")
    write_spec(tmp_path / "specs", document)
    client = temporal_env.client
    queue = f"nobody-{uuid.uuid4().hex[:8]}"  # no worker: only whether it starts matters here
    gateway = make_gateway(client, tmp_path / "specs", queue)

    def payload(ref: str, after: str, checkout: str | None, kind: str = "push") -> bytes:
        return json.dumps(
            {
                "object_kind": kind,
                "ref": ref,
                "before": "2" * 40,
                "after": after,
                "checkout_sha": checkout,
                "user_username": "bob",
                "project": {
                    "git_http_url": source,
                    "git_ssh_url": "git@gitlab.example:o/r.git",
                    "web_url": "https://gitlab.example/o/r",
                },
            }
        ).encode()

    headers = {
        "content-type": "application/json",
        "x-gitlab-event": "Push Hook",
        "x-gitlab-token": GITLAB_TOKEN,
    }
    branch_at(source, "release/2", revision)
    async with http(gateway) as web:
        for bad in ({}, {"x-gitlab-token": "wrong"}):
            refused = await web.post(
                "/hooks/gitlab",
                content=payload("refs/heads/release/2", revision, revision),
                headers={**headers, "x-gitlab-token": "", **bad},
            )
            assert refused.status_code == 401
        assert await deliveries_of(client, "labbed", revision) == []
        for body, reason in (
            (payload("refs/heads/release/2", ZERO, None), "branch deleted"),
            (payload("refs/tags/v2", revision, revision, kind="tag_push"), "only push"),
        ):
            answer = await web.post("/hooks/gitlab", content=body, headers=headers)
            assert answer.status_code == 200 and reason in answer.json()["reason"]
        keyed = {**headers, "idempotency-key": str(uuid.uuid4())}
        started = await web.post(
            "/hooks/gitlab", content=payload("refs/heads/release/2", revision, revision), headers=keyed
        )
        assert started.status_code == 200 and started.json()["result"] == "started", started.text
        retried = await web.post(
            "/hooks/gitlab", content=payload("refs/heads/release/2", revision, revision), headers=keyed
        )
        assert retried.json()["result"] == "ignored"
    [labbed] = await deliveries_of(client, "labbed", revision, at_least=1)
    assert labbed == started.json()["deliveries"][0]["delivery_id"]
    assert (await client.get_workflow_handle(labbed).describe()).task_queue == queue
    await client.get_workflow_handle(labbed).terminate("test over")


async def test_a_push_of_a_delivered_head_with_another_before_is_a_repeat_not_a_new_push(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """GitLab's token is sent as it is: whoever holds it could post the branch's head again with any `before`
    and restart the delivery on-call aborted. Only a push away from the head and back (which started a
    delivery of the other revision in between) delivers it again."""
    document, source, first = app_spec(tmp_path, "repeated")
    write_spec(tmp_path / "specs", document)
    client = temporal_env.client
    gateway = make_gateway(client, tmp_path / "specs", f"nobody-{uuid.uuid4().hex[:8]}")
    headers = {"content-type": "application/json", "x-gitlab-token": GITLAB_TOKEN}

    def push(before: str, after: str) -> bytes:
        return json.dumps(
            {
                "object_kind": "push",
                "ref": "refs/heads/release/3",
                "before": before,
                "after": after,
                "checkout_sha": after,
                "user_username": "mallory",
                "project": {"git_http_url": source},
            }
        ).encode()

    async def post(before: str, after: str) -> httpx.Response:
        return await web.post("/hooks/gitlab", content=push(before, after), headers=headers)

    branch_at(source, "release/3", first)
    async with http(gateway) as web:
        started = await post("2" * 40, first)
        assert started.json()["result"] == "started", started.text
        aborted = started.json()["deliveries"][0]["delivery_id"]
        await client.get_workflow_handle(aborted).terminate("on-call aborted it")
        await deliveries_of(client, "repeated", first, at_least=1)  # visibility lags a start
        for forged in ("3" * 40, ZERO, "2" * 39 + "3"):
            repeat = await post(forged, first)
            assert repeat.status_code == 409, repeat.text
            assert aborted in repeat.json()["deliveries"][0]["reason"]
        assert (await post("2" * 40, first)).json()["result"] == "already started"  # the same event
        # A real move away and back: the second revision's delivery vouches for the `before` of the return.
        second = git("commit-tree", "-p", first, "-m", "second", f"{first}^{{tree}}", cwd=source)
        branch_at(source, "release/3", second)
        assert (await post(first, second)).json()["result"] == "started"
        await deliveries_of(client, "repeated", second, at_least=1)
        branch_at(source, "release/3", first)
        back = await post(second, first)
        assert back.status_code == 200 and back.json()["result"] == "started", back.text
        assert (await post("4" * 40, first)).status_code == 409
        metrics = (await web.get("/metrics")).text
    assert len(await deliveries_of(client, "repeated", first, at_least=2)) == 2
    assert metric(metrics, 'aicd_webhooks_refused_total{provider="gitlab",reason="repeated_push"}') == 4


async def test_branch_with_shell_metacharacters_is_data(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    marks = [tmp_path / f"pwned-{n}" for n in range(5)]
    # A name Git accepts (no spaces: ${IFS} does their work in a shell), so only the shell could hurt.
    branch = (
        f"release/$(touch${{IFS}}{marks[0]});touch${{IFS}}{marks[1]}|touch${{IFS}}{marks[2]}"
        f"&&touch${{IFS}}{marks[3]}`touch${{IFS}}{marks[4]}`"
    )
    assert git("check-ref-format", f"refs/heads/{branch}") == ""
    document, source, revision = app_spec(tmp_path, "shelly")
    document["spec"]["test"] = [
        {"name": "echo", "command": [sys.executable, "-c", "print('revision {{ revision }}')"]}
    ]
    write_spec(tmp_path / "specs", document)
    branch_at(source, branch, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        gateway = make_gateway(client, tmp_path / "specs", queue)
        async with http(gateway) as web:
            body = json.dumps(github_payload(source, f"refs/heads/{branch}", revision)).encode()
            answer = await web.post("/hooks/github", content=body, headers=github_headers(body))
            assert answer.json()["result"] == "started", answer.text
        delivery = answer.json()["deliveries"][0]["delivery_id"]
        result = await handle_for(client, delivery).result()
        status = await get_status(client, delivery)
    assert result.phase == "succeeded", result.reason
    assert status.trigger is not None and status.trigger.branch == branch
    log = (tmp_path / "state" / "logs" / delivery / "echo.log").read_text()
    assert log.strip() == f"revision {revision}"
    assert [mark for mark in marks if mark.exists()] == []


def test_repository_url_forms_match() -> None:
    same = [
        "https://github.com/Payments/Checkout-API.git",
        "https://GitHub.com/payments/checkout-api",
        "http://github.com/payments/checkout-api/",
        "ssh://git@github.com/payments/checkout-api.git",
        "ssh://git@github.com:22/payments/checkout-api.git",
        "git@github.com:payments/checkout-api.git",
        "github.com:payments/checkout-api",
        "git://github.com/payments/checkout-api.git",
    ]
    assert {repo_key(url) for url in same} == {"github.com/payments/checkout-api"}
    assert repo_key("https://gitlab.com/payments/checkout-api.git") != repo_key(same[0])
    assert repo_key("git@github.com:payments/checkout.git") != repo_key(same[0])
    assert repo_key("/srv/git/app.git") == repo_key("file:///srv/git/app.git") == repo_key("/srv/git/app/")
    assert branch_matches("release/1.2", ["release/*"]) and branch_matches("release/a/b", ["release/*"])
    assert not branch_matches("main", ["release/*"]) and not branch_matches("prerelease/1", ["release/*"])
    assert not branch_matches("Release/1", ["release/*"])


def test_spec_directory_reloads_and_survives_a_broken_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good, _, _ = app_spec(tmp_path, "alpha")
    other, _, _ = app_spec(tmp_path, "beta")
    spec_dir = tmp_path / "specs"
    alpha = write_spec(spec_dir, good)
    beta = spec_dir / "beta.yaml"
    beta.write_text(
        "apiVersion: aicd.dev/v1alpha1\nkind: DeliverySpec\nmetadata: {name: beta}\nspec:\n  source: {repo: x}\n"
    )
    directory = SpecDirectory(spec_dir)
    with caplog.at_level(logging.ERROR, logger="aicd.gateway.specs"):
        assert directory.reload()
    assert [s.spec.name for s in directory.specs] == ["alpha"]
    assert any(
        f"{beta}:5:" in record.getMessage() or f"{beta}:4:" in record.getMessage()
        for record in caplog.records
    ), caplog.text
    assert not directory.reload()  # nothing changed
    beta.write_text(yaml.safe_dump(other))
    assert directory.reload()
    assert sorted(s.spec.name for s in directory.specs) == ["alpha", "beta"] and directory.errors == {}
    alpha.write_text("spec: [unclosed\n")  # alpha breaks: its last valid version keeps serving
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="aicd.gateway.specs"):
        assert directory.reload()
    assert sorted(s.spec.name for s in directory.specs) == ["alpha", "beta"]
    assert str(alpha) in directory.errors and "still serving its last valid version" in caplog.text
    alpha.unlink()
    assert directory.reload()
    assert [s.spec.name for s in directory.specs] == ["beta"]


async def test_aicd_serve_runs_the_gateway(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    document, source, revision = app_spec(tmp_path, "served")
    write_spec(tmp_path / "specs", document)
    port = free_port()
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "AICD_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
    }
    command = [
        sys.executable,
        "-m",
        "aicd",
        "serve",
        "--specs",
        str(tmp_path / "specs"),
        "--port",
        str(port),
        "--task-queue",
        queue,
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:
            for _ in range(200):
                try:
                    health = await web.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert health.json()["specs"] == ["served"]
            branch_at(source, "release/9", revision)
            body = json.dumps(github_payload(source, "refs/heads/release/9", revision)).encode()
            answer = await web.post("/hooks/github", content=body, headers=github_headers(body))
            assert answer.json()["result"] == "started", answer.text
            started = answer.json()["deliveries"][0]["delivery_id"]
            for _ in range(50):  # the dashboard, beside the webhooks, lists it (visibility catches up)
                listing = await web.get("/")
                if started in listing.text:
                    break
                await asyncio.sleep(0.1)
            assert started in listing.text
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=20)[0].decode()
    assert process.returncode == 0, output
    assert GITHUB_SECRET not in output
    handle = temporal_env.client.get_workflow_handle(answer.json()["deliveries"][0]["delivery_id"])
    assert (await handle.describe()).task_queue == queue
    await handle.terminate("test over")


async def test_webhook_habits(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """GitHub's Redeliver after a fix is handled again (only events that started or found a delivery are
    remembered); a 1.1 MB push fits the default 25 MB cap, which is configurable; GitLab system hooks start
    deliveries; a forced push says so in the trigger."""
    document, source, revision = app_spec(tmp_path, "habits")
    document["spec"]["source"]["branches"] = ["hotfix/*"]  # the spec does not match the push yet
    write_spec(tmp_path / "specs", document)
    branch_at(source, "release/1", revision)
    client = temporal_env.client
    commits = [
        {"id": uuid.uuid4().hex, "message": "x" * 1000, "added": [f"f{n}" for n in range(50)]}
        for _ in range(1000)
    ]
    body = json.dumps(github_payload(source, "refs/heads/release/1", revision, commits=commits)).encode()
    assert len(body) > 1_100_000
    headers = github_headers(body, delivery="redelivered-1")
    started: list[str] = []
    async with (
        running_worker(client, tmp_path / "state") as queue,
        http(make_gateway(client, tmp_path / "specs", queue)) as web,
    ):
        ignored = await web.post("/hooks/github", content=body, headers=headers)
        assert ignored.status_code == 200 and "no spec" in ignored.json()["reason"], ignored.text
        document["spec"]["source"]["branches"] = ["release/*"]  # the spec is fixed, then GitHub redelivers
        write_spec(tmp_path / "specs", document)
        redelivered = await web.post("/hooks/github", content=body, headers=headers)
        assert redelivered.json()["result"] == "started", redelivered.text
        started.append(redelivered.json()["deliveries"][0]["delivery_id"])
        replayed = await web.post("/hooks/github", content=body, headers=headers)
        assert replayed.json()["result"] == "ignored" and "replayed" in replayed.json()["reason"]

        seed = tmp_path / "habits-source-seed"
        git(
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@x",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "amend",
            cwd=seed,
        )
        rewritten = git("rev-parse", "HEAD", cwd=seed)
        git("push", "-q", "--force", source, f"{rewritten}:refs/heads/release/1", cwd=seed)
        forced = json.dumps(
            github_payload(source, "refs/heads/release/1", rewritten, before=revision, forced=True)
        ).encode()
        answer = await web.post("/hooks/github", content=forced, headers=github_headers(forced))
        assert answer.json()["result"] == "started", answer.text
        started.append(answer.json()["deliveries"][0]["delivery_id"])

        branch_at(source, "release/2", revision)
        system_hook = {
            "event_name": "push",
            "before": ZERO,
            "after": revision,
            "ref": "refs/heads/release/2",
            "checkout_sha": revision,
            "user_username": "root",
            "project": {"git_http_url": source, "web_url": "https://gitlab.example/o/r"},
        }
        answer = await web.post(
            "/hooks/gitlab",
            content=json.dumps(system_hook).encode(),
            headers={
                "content-type": "application/json",
                "x-gitlab-event": "System Hook",
                "x-gitlab-token": GITLAB_TOKEN,
            },
        )
        assert answer.json()["result"] == "started", answer.text
        started.append(answer.json()["deliveries"][0]["delivery_id"])
        detail = (await get_status(client, started[1])).trigger.detail  # type: ignore[union-attr]
        assert detail.startswith(f"forced push: {revision[:7]} replaced by {rewritten[:7]}"), detail
        assert (await get_status(client, started[2])).trigger.source == "gitlab"  # type: ignore[union-attr]
        for delivery in started:
            assert (await handle_for(client, delivery).result()).phase in ("succeeded", "superseded")
    small = GatewaySettings.from_env(tmp_path / "specs")
    assert small.max_body_bytes == 25 * 1024 * 1024
    os.environ["AICD_WEBHOOK_MAX_BODY_BYTES"] = "1000000"
    try:
        capped = make_gateway(
            client, tmp_path / "specs", None, max_body_bytes=GatewaySettings.from_env(tmp_path).max_body_bytes
        )
        async with http(capped) as web:
            too_big = await web.post("/hooks/github", content=body, headers=github_headers(body))
        assert too_big.status_code == 413
    finally:
        del os.environ["AICD_WEBHOOK_MAX_BODY_BYTES"]
