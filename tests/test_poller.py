"""The Git poller against a local bare repository: the first poll records the heads, a new head of a release
branch starts one delivery, an existing head never starts a second one (also after a restart), a branch
named like a shell command is only data, and a head is remembered only once its delivery started."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd.client import get_status, start_delivery
from aicd.gateway.metrics import Metrics
from aicd.gateway.specs import SpecDirectory
from aicd.messages import Trigger
from aicd.plan import build_plan
from aicd.poller import GitPoller
from aicd.source import SourceError as PollError
from aicd.source import list_heads
from aicd.testing.engine import deliveries_of, git, running_worker, temporal_env
from aicd.testing.standins.git_http import GitHttpStandIn
from tests.test_gateway_webhooks import app_spec, write_spec

__all__ = ["temporal_env"]


def push_commit(seed: Path, bare: str, branch: str) -> str:
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@localhost",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        branch,
        cwd=seed,
    )
    git("push", "-q", bare, f"HEAD:refs/heads/{branch}", cwd=seed)
    return git("rev-parse", "HEAD", cwd=seed)


async def test_new_heads_of_release_branches_start_deliveries(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    app = f"polled-{uuid.uuid4().hex[:6]}"
    document, source, _ = app_spec(tmp_path, app)
    write_spec(tmp_path / "specs", document)
    seed = tmp_path / f"{app}-source-seed"
    client = temporal_env.client
    state_file = tmp_path / "state" / "poller-heads.json"
    temporal_up = True

    async def connect() -> Client:
        if not temporal_up:
            raise ConnectionError("Temporal unreachable")
        return client

    async with running_worker(client, tmp_path / "worker") as queue:
        poller = GitPoller(SpecDirectory(tmp_path / "specs"), connect, state_file, queue=queue)
        old = push_commit(seed, source, "release/old")
        assert await poller.poll_once() == []  # baseline: heads that exist now are not "new"
        assert await deliveries_of(client, app, old) == []

        head = push_commit(seed, source, "release/x")
        push_commit(seed, source, "feature/y")
        (result,) = await poller.poll_once()
        assert (result.app, result.branch, result.revision, result.outcome) == (
            app,
            "release/x",
            head,
            "started",
        )
        status = await get_status(client, result.delivery_id or "")
        assert status.trigger is not None and (status.trigger.source, status.trigger.branch) == (
            "poller",
            "release/x",
        )
        assert await poller.poll_once() == []  # the same head again: nothing
        restarted = GitPoller(SpecDirectory(tmp_path / "specs"), connect, state_file, queue=queue)
        assert await restarted.poll_once() == []

        # A branch name full of shell syntax is data; git ls-remote runs as argv.
        mark = tmp_path / "pwned"
        branch = f"release/$(touch${{IFS}}{mark});touch${{IFS}}{mark}"
        weird = push_commit(seed, source, branch)
        temporal_up = False  # and Temporal is down on this poll: the head must not be forgotten
        (failed,) = await restarted.poll_once()
        assert failed.outcome.startswith("error") and await deliveries_of(client, app, weird) == []
        temporal_up = True
        (started,) = await restarted.poll_once()
        assert (started.branch, started.outcome) == (branch, "started")
        assert (await get_status(client, started.delivery_id or "")).trigger.branch == branch  # type: ignore[union-attr]
        assert not mark.exists()

        # `aicd watch --once` shares the state file: it knows every head already.
        newest = push_commit(seed, source, "release/x")
        env = {**os.environ, "TEMPORAL_ADDRESS": client.service_client.config.target_host}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "aicd",
                "watch",
                "--specs",
                str(tmp_path / "specs"),
                "--state-dir",
                str(state_file.parent),
                "--task-queue",
                queue,
                "--once",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines() == [f"{app} release/x {newest[:12]}: started"]
        for revision in (head, weird, newest):
            for delivery in await deliveries_of(client, app, revision):
                await client.get_workflow_handle(delivery).terminate("test over")


async def test_a_head_a_webhook_delivered_is_not_delivered_again_by_the_poller(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The webhook saw a head in between that this poller missed, so their `before`s differ: one push still
    makes one delivery."""
    app = f"twice-{uuid.uuid4().hex[:6]}"
    document, source, _ = app_spec(tmp_path, app)
    write_spec(tmp_path / "specs", document)
    seed = tmp_path / f"{app}-source-seed"
    client = temporal_env.client
    queue = f"nobody-{uuid.uuid4().hex[:8]}"  # no worker: only what starts matters here

    async def connect() -> Client:
        return client

    poller = GitPoller(SpecDirectory(tmp_path / "specs"), connect, tmp_path / "heads.json", queue=queue)
    assert await poller.poll_once() == []
    first = push_commit(seed, source, "release/z")
    (polled,) = await poller.poll_once()
    assert polled.outcome == "started"
    between = push_commit(seed, source, "release/z")
    head = push_commit(seed, source, "release/z")
    loaded = poller.specs.by_app(app)
    assert loaded is not None
    plan = build_plan(loaded.spec, head)
    hooked = await start_delivery(
        client,
        plan,
        Trigger("gitlab", "bob", "release/z", event=f"push:release/z:{between}:{head}"),
        queue=queue,
    )
    await deliveries_of(client, app, head, at_least=1)  # visibility lags a start
    (again,) = await poller.poll_once()
    assert (again.outcome, again.delivery_id) == ("already started", hooked.delivery_id)
    assert await deliveries_of(client, app, head) == [hooked.delivery_id]
    for revision in (first, head):
        for delivery in await deliveries_of(client, app, revision):
            await client.get_workflow_handle(delivery).terminate("test over")


async def test_ls_remote_refuses_option_like_repositories(tmp_path: Path) -> None:
    with pytest.raises(PollError, match="read as an option"):
        await list_heads("--upload-pack=touch /tmp/x")
    with pytest.raises(PollError, match="failed"):
        await list_heads("ext::sh -c touch% /tmp/aicd-ext-pwned")
    assert not Path("/tmp/aicd-ext-pwned").exists()


async def test_heads_git_refuses_start_nothing(
    temporal_env: WorkflowEnvironment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server may list names no Git repository can hold; each is skipped, logged once, and never started."""
    app = f"hostile-{uuid.uuid4().hex[:6]}"
    bad = [
        "release/a..b",
        "release/x\x01y",
        "release/x.lock",
        "release/a@{1}",
        "release/x.",
        "release//x",
        "release/a~1",
        "release/a:b",
        "release/.x",
        "release/a\\b",
    ]
    shas = {name: uuid.uuid4().hex + uuid.uuid4().hex[:8] for name in ["release/base", "release/ok", *bad]}
    client = temporal_env.client
    metrics = Metrics()
    with GitHttpStandIn() as server:
        document, _, _ = app_spec(tmp_path, app)
        document["spec"]["source"]["repo"] = server.url()
        write_spec(tmp_path / "specs", document)
        poller = GitPoller(
            SpecDirectory(tmp_path / "specs"),
            lambda: _connected(client),
            tmp_path / "state" / "heads.json",
            queue=f"nobody-{uuid.uuid4().hex[:8]}",
            metrics=metrics,
        )
        server.refs = {"refs/heads/release/base": shas["release/base"]}
        assert await poller.poll_once() == []  # the baseline
        server.refs = {f"refs/heads/{name}": sha for name, sha in shas.items()}
        with caplog.at_level(logging.WARNING, logger="aicd.poller"):
            results = await poller.poll_once()
            assert await poller.poll_once() == []  # skipped heads are remembered, not retried
        assert [(r.branch, r.outcome) for r in results] == [("release/ok", "started")]
        for name in bad:
            assert await deliveries_of(client, app, shas[name]) == [], name
        skipped = [r.getMessage() for r in caplog.records if "skipping head" in r.getMessage()]
        assert len(skipped) == len(bad) and all("Git refuses this branch name" in line for line in skipped)
        assert "\x01" not in caplog.text
        assert metrics.value("aicd_poller_refs_refused_total") == len(bad)
    await client.get_workflow_handle(results[0].delivery_id or "").terminate("test over")


async def _connected(client: Client) -> Client:
    return client
