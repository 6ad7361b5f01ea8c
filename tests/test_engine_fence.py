"""A write lands only while Temporal still wants it. Several workers (separate processes, each with its own
state dir and clone) share one GitOps repository; a Git post-commit hook stops or kills whichever worker
makes the first commit after it is armed - between the ownership check and the push, the worst moment:
- SIGSTOP for longer than the heartbeat timeout (a VM pause, CPU throttling): Temporal gives the step to
  another worker; the stalled one, resumed, must not push its step late;
- SIGKILL: the step is retried elsewhere and committed exactly once.
The verdict is read from Git: one commit per step, the final files right, nothing after the last step."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from aicd.client import handle_for, start_delivery
from aicd.messages import Trigger
from aicd.testing.engine import commits, git, make_repo, plan_from, show, spec_document, temporal_env
from tests.conftest import REPO_ROOT

__all__ = ["temporal_env"]

HOOK = """#!/bin/sh
# Fires once, on the first commit after the test arms it: stops (or kills) the worker that made it.
[ -e "{armed}" ] || exit 0
mkdir "{fired}" 2>/dev/null || exit 0
worker=$(ps -o ppid= -p $PPID | tr -d ' ')
echo "$worker" > "{fired}/pid"
kill -{signal} "$worker"
"""


@contextmanager
def workers(tmp_path: Path, address: str, queue: str, count: int, hook_signal: str) -> Iterator[Path]:
    """`count` worker processes with the post-commit hook; yields the directory where the hook leaves its
    `fired/pid` once armed (create `armed` in it)."""
    control = tmp_path / "hook"
    hooks = control / "hooks"
    hooks.mkdir(parents=True)
    script = hooks / "post-commit"
    script.write_text(HOOK.format(armed=control / "armed", fired=control / "fired", signal=hook_signal))
    script.chmod(0o755)
    env = {
        **os.environ,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.hooksPath",
        "GIT_CONFIG_VALUE_0": str(hooks),
        "PYTHONPATH": str(REPO_ROOT),
    }
    processes = []
    try:
        for index in range(count):
            log = open(tmp_path / f"worker-{index}.log", "wb")  # noqa: SIM115 - closed with the process below
            argv = [
                sys.executable,
                str(REPO_ROOT / "worker.py"),
                "--state-dir",
                str(tmp_path / f"state-{index}"),
                "--address",
                address,
                "--task-queue",
                queue,
            ]
            processes.append(
                (subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT), log)
            )
        yield control
    finally:
        for process, log in processes:
            for signum in (signal.SIGCONT, signal.SIGTERM):
                with suppress(ProcessLookupError):
                    process.send_signal(signum)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


async def run_fleet_of_deliveries(
    temporal_env: WorkflowEnvironment, tmp_path: Path, hook_signal: str, stall_s: float
) -> None:
    apps = [f"fenced-{uuid.uuid4().hex[:5]}-{n}" for n in range(4)]
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(
        tmp_path, "gitops", {f"{app}.yaml": "image:\n  tag: v0\ncanary:\n  weight: 0\n" for app in apps}
    )
    steps = [{"setWeight": 10}, {"setWeight": 50}, {"pause": "2s"}, {"setWeight": 100}]
    plans = [
        plan_from(
            spec_document(
                app,
                source,
                gitops,
                {"web": {"kind": "git", "path": f"{app}.yaml"}},
                [{"name": "prod", "targets": ["web"], "strategy": {"canary": {"steps": steps}}}],
            ),
            revision,
        )
        for app in apps
    ]
    client = temporal_env.client
    queue = f"fence-{uuid.uuid4().hex[:8]}"
    with workers(tmp_path, client.service_client.config.target_host, queue, 3, hook_signal) as control:
        (control / "armed").touch()
        for plan in plans:
            await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        deadline = time.monotonic() + 60
        while not (control / "fired" / "pid").exists():
            assert time.monotonic() < deadline, "the hook never fired"
            await asyncio.sleep(0.1)
        stalled = int((control / "fired" / "pid").read_text())
        results = await asyncio.wait_for(
            asyncio.gather(*(handle_for(client, p.delivery_id).result() for p in plans)), 180
        )
        if hook_signal == "STOP":
            # Every delivery is done; the stalled worker wakes up after more than the heartbeat timeout.
            await asyncio.sleep(max(0.0, stall_s - 1))
            log_before = commits(gitops)
            os.kill(stalled, signal.SIGCONT)
            await asyncio.sleep(6)  # time for a late push, if it were to happen
            assert commits(gitops) == log_before, "a stalled worker pushed after it resumed"
    assert {result.phase for result in results} == {"succeeded"}, [r.reason for r in results]
    made = [entry for entry in commits(gitops) if "Aicd-Step" in entry]
    per_step = Counter((entry["Aicd-Delivery-Id"], entry["Aicd-Step"]) for entry in made)
    assert set(per_step.values()) == {1}, per_step  # no step committed twice
    assert len(made) == len(plans) * 4  # three setWeight steps and the promotion each
    for plan, app in zip(plans, apps, strict=True):
        assert (
            show(gitops, "main", f"{app}.yaml")
            == f"image:\n  tag: {plan.artifact_tag}\ncanary:\n  weight: 0\n  tag: {plan.artifact_tag}"
        )
        last = git(
            "--git-dir",
            gitops,
            "log",
            "-1",
            "--format=%(trailers:key=Aicd-Step,valueonly,separator=)",
            "main",
            "--",
            f"{app}.yaml",
        )
        assert last == "prod/web/promote", (app, last)  # nothing landed after the promotion


async def test_a_worker_stalled_past_its_heartbeat_never_writes_late(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    await run_fleet_of_deliveries(temporal_env, tmp_path, "STOP", stall_s=25)


async def test_a_stalled_write_of_a_delivery_that_ended_meanwhile_never_lands(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Nothing else moves the branch here, so only the fence can stop the push: the worker stalls right after
    committing the first step locally, the operator terminates the delivery, the worker wakes up."""
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
    plan = plan_from(
        spec_document(
            "stalled",
            source,
            gitops,
            {"web": {"kind": "git", "path": "web.yaml"}},
            [{"name": "prod", "targets": ["web"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
        ),
        revision,
    )
    client = temporal_env.client
    queue = f"fence-{uuid.uuid4().hex[:8]}"
    with workers(tmp_path, client.service_client.config.target_host, queue, 1, "STOP") as control:
        (control / "armed").touch()
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        deadline = time.monotonic() + 60
        while not (control / "fired" / "pid").exists():
            assert time.monotonic() < deadline, "the hook never fired"
            await asyncio.sleep(0.1)
        stalled = int((control / "fired" / "pid").read_text())
        await client.get_workflow_handle(plan.delivery_id).terminate("operator: stuck")  # its child goes too
        os.kill(stalled, signal.SIGCONT)
        await asyncio.sleep(8)  # time for a late push, if it were to happen
        log = (tmp_path / "worker-0.log").read_text(errors="replace")
    assert [entry for entry in commits(gitops) if "Aicd-Step" in entry] == []
    assert "write dropped: workflow" in log and "has ended" in log, log[-2000:]


async def test_a_worker_killed_between_check_and_push_loses_nothing(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    await run_fleet_of_deliveries(temporal_env, tmp_path, "KILL", stall_s=0)
