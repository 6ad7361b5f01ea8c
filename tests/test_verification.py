"""Verification runs end to end on real Temporal and Git: `verify` steps (HTTP checks and commands) that pass,
fail, time out and are retried, a stage's `verify:` after its targets are promoted, and a failed run rolled
back per scope with Git restored. The checked service is a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from aicd.activities import WorkerSettings
from aicd.activities.commands import CommandSecrets
from aicd.activities.verification import BODY_TAIL_CHARS, HttpCheckRequest, VerificationActivities
from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.dashboard.views import stage_views
from aicd.messages import HumanAction, Trigger
from aicd.plan import render_tree
from aicd.slack_blocks import compact_status, delivery_message
from aicd.status_view import status_text
from aicd.testing.engine import (
    assert_replays,
    commits,
    make_repo,
    plan_from,
    show,
    spec_document,
    temporal_env,
    wait_for,
)
from aicd.verification import HttpCheck
from aicd.worker import build_worker

__all__ = ["temporal_env"]

VALUES = "apps/shop/values.yaml"
SEED = "image:\n  tag: v1\ncanary:\n  weight: 0\n  tag: v1\n"
SECRET = "s3cr3t-token-value-42"


class Service:
    """A loopback HTTP service whose paths behave as a test needs: /ok (200 with a version), /broken (500),
    /slow (answers after 3 s), /flaky (503 for its first two requests, then 200), /secret (echoes the
    Authorization header it got), /late-secret (echoes it where the kept start of a body ends), /late-url (a
    URL with a password there); every request is counted per path."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.headers: dict[str, str] = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                service.hits[path] = service.hits.get(path, 0) + 1
                status, body = 200, "ok version v2"
                if path == "/broken":
                    status, body = 500, "database down"
                elif path == "/slow":
                    time.sleep(3)
                elif path == "/flaky" and service.hits[path] <= 2:
                    status, body = 503, "warming up"
                elif path == "/secret":
                    body = f"you sent {self.headers.get('Authorization')}"
                    status = 403
                elif path == "/late-secret":  # the secret starts 12 characters before the kept start ends
                    body = (
                        "." * (BODY_TAIL_CHARS - 12 - len("Bearer ")) + f"{self.headers.get('Authorization')}"
                    )
                    status = 403
                elif path == "/late-url":
                    body = (
                        "." * (BODY_TAIL_CHARS - 12 - len("https://ci:")) + f"https://ci:{SECRET}@git.example"
                    )
                    status = 500
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[Service]:
    running = Service()
    yield running
    running.close()


def delivery(
    tmp_path: Path,
    steps: list[dict[str, Any]],
    stage_verify: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> tuple[Any, str]:
    source, revision = make_repo(tmp_path, "source", {"smoke.py": "print('smoke ran')\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {VALUES: SEED})
    stage: dict[str, Any] = {"name": "staging", "targets": ["web"], "strategy": {"canary": {"steps": steps}}}
    if stage_verify:
        stage["verify"] = stage_verify
    document = spec_document(
        "shop",
        source,
        gitops,
        {"web": {"kind": "git", "path": VALUES, **extra.pop("target", {})}},
        [stage],
        build={"command": ["true"], "artifact": "registry.example.com/shop:v2"},
        **extra,
    )
    return plan_from(document, revision), gitops


async def run(env: WorkflowEnvironment, tmp_path: Path, plan: Any, **settings: Any) -> Any:
    client = env.client
    worker_settings = WorkerSettings(state_dir=tmp_path / "state", **settings)
    queue = f"verify-{os.getpid()}-{time.monotonic_ns()}"
    async with build_worker(client, worker_settings, queue):
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
        await assert_replays(client, [plan.delivery_id, f"{plan.delivery_id}--staging--web"])
    return status


def runs_of(status: Any) -> list[Any]:
    return status.targets["web"].verifications


async def test_an_http_check_that_passes_lets_the_canary_go_on(
    temporal_env: WorkflowEnvironment, tmp_path: Path, service: Service
) -> None:
    steps = [
        {"setWeight": 50},
        {"verify": {"name": "health", "http": {"url": f"{service.url}/ok", "expectBody": "version v2"}}},
        {"setWeight": 100},
    ]
    plan, gitops = delivery(tmp_path, steps)
    assert f"verify health: GET {service.url}/ok expects 200 and body ~ /version v2/" in render_tree(plan)
    status = await run(temporal_env, tmp_path, plan)
    assert status.phase == "succeeded"
    (check,) = runs_of(status)
    assert (check.name, check.step, check.state, check.attempts) == ("health", "1-verify", "passed", 1)
    assert "status 200" in check.detail and check.output_tail == "ok version v2"
    assert service.hits["/ok"] == 1
    assert "tag: v2" in show(gitops, "main", VALUES)
    assert "verify health" in status_text(status)


async def test_a_failed_check_fails_the_step_and_rolls_back_git(
    temporal_env: WorkflowEnvironment, tmp_path: Path, service: Service
) -> None:
    steps = [
        {"setWeight": 50},
        {"verify": {"name": "health", "http": {"url": f"{service.url}/broken"}}},
        {"setWeight": 100},
    ]
    plan, gitops = delivery(tmp_path, steps)
    status = await run(temporal_env, tmp_path, plan)
    assert status.phase == "failed"
    assert "verify health failed after 1 attempt(s)" in status.reason and "status 500" in status.reason
    (check,) = runs_of(status)
    assert check.state == "failed" and check.output_tail == "database down"
    assert status.targets["web"].state == "rolled-back"
    assert show(gitops, "main", VALUES) == SEED.strip()  # the canary commit undone, the file as before
    steps_committed = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert [step.rsplit("/", 1)[1] for step in steps_committed] == ["0-setWeight", "rollback"]


async def test_a_check_that_answers_too_late_has_timed_out(
    temporal_env: WorkflowEnvironment, tmp_path: Path, service: Service
) -> None:
    steps = [
        {"verify": {"name": "slow", "timeout": "1s", "http": {"url": f"{service.url}/slow"}}},
        {"setWeight": 100},
    ]
    plan, gitops = delivery(tmp_path, steps)
    status = await run(temporal_env, tmp_path, plan)
    assert status.phase == "failed"
    (check,) = runs_of(status)
    assert check.state == "failed" and "no answer within 1s" in check.detail
    assert show(gitops, "main", VALUES) == SEED.strip()


async def test_a_command_that_runs_too_long_is_stopped_and_fails(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    slow = {"name": "soak", "timeout": "1s", "command": [sys.executable, "-c", "import time; time.sleep(30)"]}
    plan, gitops = delivery(tmp_path, [{"verify": slow}, {"setWeight": 100}])
    status = await run(temporal_env, tmp_path, plan)
    assert status.phase == "failed"
    (check,) = runs_of(status)
    assert check.state == "failed" and check.detail == "attempt 1: timed out after 1s"
    assert show(gitops, "main", VALUES) == SEED.strip()


async def test_a_flaky_check_passes_on_its_third_attempt(
    temporal_env: WorkflowEnvironment, tmp_path: Path, service: Service
) -> None:
    flaky = {"name": "warm", "retries": 2, "retryInterval": "1s", "http": {"url": f"{service.url}/flaky"}}
    plan, _ = delivery(tmp_path, [{"verify": flaky}, {"setWeight": 100}])
    status = await run(temporal_env, tmp_path, plan)
    assert status.phase == "succeeded"
    (check,) = runs_of(status)
    assert (check.state, check.attempts, check.max_attempts) == ("passed", 3, 3)
    assert service.hits["/flaky"] == 3


async def test_retries_run_out(temporal_env: WorkflowEnvironment, tmp_path: Path, service: Service) -> None:
    broken = {"name": "db", "retries": 1, "retryInterval": "1s", "http": {"url": f"{service.url}/broken"}}
    plan, _ = delivery(tmp_path, [{"verify": broken}, {"setWeight": 100}])
    status = await run(temporal_env, tmp_path, plan)
    assert status.phase == "failed" and "failed after 2 attempt(s)" in status.reason
    assert service.hits["/broken"] == 2


async def test_a_command_run_keeps_its_output_tail_masked(
    temporal_env: WorkflowEnvironment, tmp_path: Path, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMOKE_TOKEN", SECRET)
    script = (
        "import os, sys, urllib.request\n"
        "print('token', os.environ['SMOKE_TOKEN'], 'target', sys.argv[1])\n"
        "urllib.request.urlopen(sys.argv[2])\n"
    )
    command = {
        "name": "smoke",
        "command": [sys.executable, "-c", script, "{{ target }}", "{{ url }}/broken"],
        "secretEnv": ["SMOKE_TOKEN"],
    }
    plan, gitops = delivery(tmp_path, [{"verify": command}, {"setWeight": 100}], target={"url": service.url})
    status = await run(
        temporal_env, tmp_path, plan, command_secrets=CommandSecrets(frozenset({"SMOKE_TOKEN"}))
    )
    assert status.phase == "failed"
    (check,) = runs_of(status)
    assert check.state == "failed" and "exited with 1" in check.detail
    assert "target web" in check.output_tail and "HTTP Error 500" in check.output_tail
    assert SECRET not in check.output_tail and SECRET not in status.reason
    assert "token ***" in check.output_tail or "token [" in check.output_tail
    assert check.log.endswith(".log")
    assert show(gitops, "main", VALUES) == SEED.strip()


@pytest.mark.parametrize("path", ["/late-secret", "/late-url"])
async def test_the_kept_start_of_a_body_never_ends_in_a_piece_of_a_secret(
    service: Service, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Only the start of a response body is kept (status, history, Slack). A secret header the service echoes,
    or a URL with a password, that the cut runs through is masked whole, not cut first and then missed."""
    monkeypatch.setenv("SMOKE_TOKEN", SECRET)
    check = HttpCheck(f"{service.url}{path}", secret_headers={"Authorization": "SMOKE_TOKEN"})
    activities = VerificationActivities(CommandSecrets(frozenset({"SMOKE_TOKEN"})))
    result = await ActivityEnvironment().run(activities.http_check, HttpCheckRequest("smoke", check, 10))
    assert not result.passed and result.output_tail.startswith("....")
    assert SECRET[:12] not in result.output_tail and SECRET[:12] not in result.detail


async def test_a_stage_verify_runs_after_promotion_and_its_failure_rolls_the_stage_back(
    temporal_env: WorkflowEnvironment, tmp_path: Path, service: Service
) -> None:
    e2e = [
        {"name": "health", "http": {"url": "{{ url }}/ok"}},
        {"name": "e2e", "http": {"url": "{{ url }}/broken", "expectStatus": [200, 204]}},
    ]
    plan, gitops = delivery(tmp_path, [{"setWeight": 100}], stage_verify=e2e, target={"url": service.url})
    assert "after the stage: verify e2e: GET {{ url }}/broken expects 200/204" in render_tree(plan)
    status = await run(temporal_env, tmp_path, plan)
    assert status.phase == "failed"
    assert status.reason.startswith("stage staging: verify e2e failed on web: attempt 1: status 500")
    health, failed = status.verifications["staging"]
    assert (health.name, health.state, health.target) == ("health", "passed", "web")
    assert (failed.name, failed.state) == ("e2e", "failed")
    # The promotion landed before the run (it checks the promoted target), then the rollback undid it.
    steps_committed = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert [step.rsplit("/", 1)[1] for step in steps_committed] == ["0-setWeight", "promote", "rollback"]
    assert show(gitops, "main", VALUES) == SEED.strip()
    assert "stage staging verification:" in status_text(status)
    _text, blocks = delivery_message(compact_status(status))
    assert "stage *staging* `web` verify e2e failed (attempt 1: status 500" in json.dumps(blocks)
    (stage,) = stage_views(plan, status)
    assert stage.verifications[1].startswith("web verify e2e [stage] failed: attempt 1: status 500")


async def test_an_abort_during_a_stage_verify_ends_the_run_without_another_attempt(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The abort cancels the running attempt's activity. That is not a failed attempt: before, the wait for the
    next attempt started after the abort, and a rollback longer than the retry interval ran the spec's command
    once more on a release being rolled back."""
    soak = {
        "name": "soak",
        "retries": 2,
        "retryInterval": "1s",
        "timeout": "5m",
        "command": [sys.executable, "-c", "import time; time.sleep(300)"],
    }
    plan, gitops = delivery(tmp_path, [{"setWeight": 100}], stage_verify=[soak])
    client = temporal_env.client
    queue = f"verify-{os.getpid()}-{time.monotonic_ns()}"
    async with build_worker(client, WorkerSettings(state_dir=tmp_path / "state"), queue):
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(
            client,
            plan.delivery_id,
            lambda status: any(run.state == "running" for run in status.verifications.get("staging", [])),
        )
        await send_action(client, plan.delivery_id, "abort", HumanAction("carol", "pager went off"))
        result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), 120)
        status = await get_status(client, plan.delivery_id)
        history = await client.get_workflow_handle(plan.delivery_id).fetch_history()
        await assert_replays(client, [plan.delivery_id])
    assert result.phase == "aborted", result.reason
    (run,) = status.verifications["staging"]
    assert run.attempts == 1 and run.state == "cancelled", run
    commands = [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]
    assert commands.count("run_command") == 2, commands  # the build, and the one attempt
    assert not any(event.HasField("workflow_task_failed_event_attributes") for event in history.events)
    kinds = [event.WhichOneof("attributes") for event in history.events]
    cancel = kinds.index("activity_task_cancel_requested_event_attributes")
    assert "timer_started_event_attributes" not in kinds[cancel:], kinds[cancel:]  # no wait for attempt 2
    assert show(gitops, "main", VALUES) == SEED.strip()
