"""Secrets and spec commands, end to end on a real Temporal, Git and the Slack stand-in.

The worker holds a Slack token (SLACK_BOT_TOKEN) and two secrets its operator allows (a worker variable
listed in AICD_COMMAND_SECRET_ENV, a file in AICD_COMMAND_SECRET_DIR). A build asks for both by name
(`secretEnv`) and gets them, and nothing else of the worker's environment; it and a failing test print
every secret, including the Slack token it found on disk. None of them appears in Temporal history,
`aicd status --json`, `aicd deliver --wait`, the captured logs, the Slack calls or the command logs kept on
the worker: only `***` does."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd.client import get_status, handle_for, start_delivery
from aicd.messages import Trigger
from aicd.testing.engine import make_repo, plan_from, running_worker, spec_document, temporal_env
from aicd.testing.standins.slack import SlackStandIn
from tests.conftest import RunAicd, aicd_env

__all__ = ["temporal_env"]

SLACK_TOKEN = f"xoxb-sentinel-{uuid.uuid4().hex}"
DEPLOY_KEY = f"deploy-{uuid.uuid4().hex}"
NPM_TOKEN = f"npm_{uuid.uuid4().hex}"
SECRETS = (SLACK_TOKEN, DEPLOY_KEY, NPM_TOKEN)

BUILD = """
import hashlib, json, os, sys
out, found = sys.argv[1], sys.argv[2]
report = {
    "names": sorted(os.environ),
    "deploy": hashlib.sha256(os.environ["DEPLOY_KEY"].encode()).hexdigest(),
    "npm": hashlib.sha256(os.environ["NPM_TOKEN"].encode()).hexdigest(),
    "greeting": os.environ["GREETING"],
}
open(out, "w").write(json.dumps(report))
print("slack token in my environment:", os.environ.get("SLACK_BOT_TOKEN"))
print("deploy key:", os.environ["DEPLOY_KEY"], "npm token:", os.environ["NPM_TOKEN"])
print("slack token found on disk:", open(found).read(), flush=True)
sys.stderr.write("split across writes: " + os.environ["DEPLOY_KEY"][:9])
sys.stderr.flush()
sys.stderr.write(os.environ["DEPLOY_KEY"][9:] + "\\n")
"""
FAILING_TEST = """
import os, sys
print("deploy key again:", os.environ["DEPLOY_KEY"])
print("and the token:", open(sys.argv[1]).read())
sys.exit(3)
"""


def payload_text(value: Any) -> str:
    """A history (as JSON) with every payload's base64 `data` decoded beside it, so values are searchable."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                if key == "data" and isinstance(item, str):
                    with contextlib.suppress(ValueError):
                        parts.append(base64.b64decode(item).decode("utf-8", "replace"))
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(value)
    return json.dumps(value) + "\n".join(parts)


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} holds a secret"
    for secret in (DEPLOY_KEY, NPM_TOKEN):  # nor a long piece of one
        assert secret[:20] not in text and secret[-20:] not in text, where


@pytest.fixture
async def slack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackStandIn]:
    standin = SlackStandIn(tokens=(SLACK_TOKEN,))
    await standin.start()
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", standin.base_url)
    yield standin
    await standin.stop()


@pytest.fixture
def worker_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The operator's allow-list: DEPLOY_KEY from the worker's environment, NPM_TOKEN from a file."""
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "NPM_TOKEN").write_text(NPM_TOKEN + "\n")
    monkeypatch.setenv("DEPLOY_KEY", DEPLOY_KEY)
    monkeypatch.setenv("AICD_COMMAND_SECRET_ENV", "DEPLOY_KEY, OTHER_ALLOWED")
    monkeypatch.setenv("AICD_COMMAND_SECRET_DIR", str(directory))
    found = tmp_path / "found-on-disk.txt"  # e.g. a config file the command can read
    found.write_text(SLACK_TOKEN)
    return found


async def test_secrets_reach_the_command_by_name_and_nothing_stores_them(
    temporal_env: WorkflowEnvironment,
    slack: SlackStandIn,
    worker_secrets: Path,
    tmp_path: Path,
    run_aicd: RunAicd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    source, revision = make_repo(tmp_path, "source", {"README": "app\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
    report = tmp_path / "build-report.json"
    document = spec_document(
        "secretive",
        source,
        gitops,
        {"web": {"kind": "git", "path": "web.yaml"}},
        [{"name": "staging", "targets": ["web"]}],
        build={
            "command": [sys.executable, "-c", BUILD, str(report), str(worker_secrets)],
            "artifact": "registry.example/secretive:{{ revision.short }}",
            "env": {"GREETING": "hello {{ revision.short }}"},
            "secretEnv": ["DEPLOY_KEY", "NPM_TOKEN"],
        },
        test=[
            {
                "name": "leaky",
                "command": [sys.executable, "-c", FAILING_TEST, str(worker_secrets)],
                "secretEnv": ["DEPLOY_KEY"],
            }
        ],
        notifications={"slack": {"channel": "#deploys"}},
    )
    spec_file = tmp_path / "secretive.yaml"
    spec_file.write_text(yaml.safe_dump(document))
    plan = plan_from(document, revision)
    client = temporal_env.client
    address = client.service_client.config.target_host
    async with running_worker(client, tmp_path / "state") as queue:
        env = aicd_env(TEMPORAL_ADDRESS=address, AICD_TASK_QUEUE=queue)
        # In a thread: the worker shares this event loop.
        delivered = await asyncio.to_thread(
            run_aicd, "deliver", str(spec_file), "--revision", revision, "--wait", env=env
        )
        status_json = await asyncio.to_thread(run_aicd, "status", "--json", plan.delivery_id, env=env)
        await slack.wait_for(lambda: any("failed" in json.dumps(c.args) for c in slack.calls))
        history = await handle_for(client, plan.delivery_id).fetch_history()
        status = await get_status(client, plan.delivery_id)

    # The command saw its secrets (the right values), its literal env, and nothing else of the worker's.
    seen = json.loads(report.read_text())
    assert seen["deploy"] == hashlib.sha256(DEPLOY_KEY.encode()).hexdigest()
    assert seen["npm"] == hashlib.sha256(NPM_TOKEN.encode()).hexdigest()
    assert seen["greeting"] == f"hello {revision[:7]}"
    base = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LC_CTYPE"}  # LC_CTYPE: Python may set it itself
    given = {"GREETING", "DEPLOY_KEY", "NPM_TOKEN", "AICD_DELIVERY", "AICD_REVISION", "AICD_ARTIFACT"}
    given.add("AICD_REPORTS_DIR")  # where a command leaves JSON reports for the policy gate
    assert set(seen["names"]) - base == given
    assert "SLACK_BOT_TOKEN" not in seen["names"] and "SLACK_API_URL" not in seen["names"]

    # The delivery failed on the test, and says so everywhere, with the output masked.
    assert delivered.returncode == 1, delivered.stderr
    assert f"{plan.delivery_id}: failed: leaky failed: leaky exited with 3" in delivered.stdout
    assert "***" in delivered.stdout and "and the token: ***" in delivered.stdout
    assert status_json.returncode == 0, status_json.stderr
    build, leaky = json.loads(status_json.stdout)["commands"]
    assert build["state"] == "succeeded" and build["log"].endswith(f"logs/{plan.delivery_id}/build.log")
    assert leaky["state"] == "failed" and "deploy key again: ***" in leaky["detail"]
    assert "whole output:" in leaky["detail"] and f"logs/{plan.delivery_id}/leaky.log" in leaky["detail"]
    assert status.phase == "failed"

    # Nothing stored or shown holds a secret.
    history_text = payload_text(history.to_json_dict())
    assert "deploy key: ***" in history_text and "split across writes: ***" in history_text
    assert_no_secret("Temporal history", history_text)
    assert_no_secret("aicd deliver --wait", delivered.stdout + delivered.stderr)
    assert_no_secret("aicd status --json", status_json.stdout + status_json.stderr)
    assert_no_secret("the captured log", caplog.text)
    calls = json.dumps([[call.method, call.args, call.answer] for call in slack.calls])
    assert "leaky failed" in calls
    assert_no_secret("the Slack calls", calls)
    logs = tmp_path / "state" / "logs" / plan.delivery_id
    # The whole output stays the worker user's own (it may hold what a command printed of a URL's password).
    assert [stat.S_IMODE(path.stat().st_mode) for path in (logs.parent, logs, logs / "build.log")] == [
        0o700,
        0o700,
        0o600,
    ]
    reports = tmp_path / "state" / "reports" / plan.delivery_id  # scanners' findings, SBOMs: the same
    assert [stat.S_IMODE(path.stat().st_mode) for path in (reports.parent, reports)] == [0o700, 0o700]
    whole = (logs / "build.log").read_text()
    assert "slack token in my environment: None" in whole and "found on disk: ***" in whole
    assert_no_secret("the command logs on the worker", whole + (logs / "leaky.log").read_text())


async def test_a_secret_the_worker_does_not_allow_fails_before_the_command_runs(
    temporal_env: WorkflowEnvironment, worker_secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME_SECRET", "not-for-commands-1234")  # in the worker's environment, not allowed
    source, revision = make_repo(tmp_path, "source", {"README": "app\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
    ran = tmp_path / "ran"
    document = spec_document(
        "greedy",
        source,
        gitops,
        {"web": {"kind": "git", "path": "web.yaml"}},
        [{"name": "staging", "targets": ["web"]}],
        build={
            "command": [sys.executable, "-c", f"open({str(ran)!r}, 'w')"],
            "artifact": "registry.example/greedy:{{ revision.short }}",
            "secretEnv": ["HOME_SECRET", "OTHER_ALLOWED"],  # OTHER_ALLOWED is allowed but not set
        },
    )
    plan = plan_from(document, revision)
    client: Client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "failed"
    assert "secretEnv ['HOME_SECRET', 'OTHER_ALLOWED'] not allowed on this worker" in result.reason
    assert "AICD_COMMAND_SECRET_ENV" in result.reason and "not-for-commands" not in result.reason
    assert not ran.exists()
