"""Durability: the worker SIGKILLed in the middle of a delivery (several points) and the Temporal dev
server stopped and restarted from its SQLite file during a pause; the delivery completes and no step has
two commits. Real processes: `aicd dev`'s EmbeddedTemporal and `python worker.py`."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from temporalio.client import Client

from aicd.activities import gitops as gitops_activities
from aicd.activities.gitops import CommitRequest, FileEdit, GitOpsActivities, RollbackRequest
from aicd.client import get_status, handle_for, start_delivery
from aicd.dev.processes import signal_group
from aicd.dev.temporal import EmbeddedTemporal
from aicd.messages import Trigger
from aicd.plan import WritePlan
from aicd.testing.engine import (
    commits,
    make_repo,
    plan_from,
    release_remote_locks,
    show,
    spec_document,
)
from aicd.testing.polling import poll_until
from tests.conftest import REPO_ROOT


def step_commits(gitops: str) -> list[dict[str, str]]:
    return [entry for entry in commits(gitops) if "Aicd-Step" in entry]


def kill_worker(stack: EmbeddedTemporal, remote: str) -> None:
    assert stack.worker is not None
    signal_group(stack.worker.pid, signal.SIGKILL)
    stack.stop_worker()
    release_remote_locks(remote)


async def test_worker_sigkilled_at_several_points_no_step_twice(tmp_path: Path) -> None:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(
        tmp_path, "gitops", {"a.yaml": "image: {tag: v0}\n", "b.yaml": "image: {tag: v0}\n"}
    )
    weights = [{"setWeight": weight} for weight in (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)]
    document = spec_document(
        "durable",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}, "b": {"kind": "git", "path": "b.yaml"}},
        [{"name": "prod", "waves": [["a"], ["b"]], "strategy": {"canary": {"steps": weights}}}],
    )
    plan = plan_from(document, revision)
    with EmbeddedTemporal(tmp_path / "stack", port=0, ui=False, write_info=False) as stack:
        stack.start_worker(task_queue="durable")
        client = await Client.connect(stack.address)
        await start_delivery(client, plan, Trigger("cli", "t"), queue="durable")
        kills = 0
        for after_commits in (2, 7, 12, 17):  # inside wave 1, at its end, inside wave 2, near the end
            await poll_until(
                lambda n=after_commits: len(step_commits(gitops)) >= n,
                60,
                lambda: f"step commits {step_commits(gitops)}",
                interval=0.02,
            )
            kill_worker(stack, gitops)
            kills += 1
            await asyncio.sleep(0.3)
            stack.start_worker(task_queue="durable")
        result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), 120)
    assert kills == 4
    assert result.phase == "succeeded", result.reason
    made = step_commits(gitops)
    per_step = Counter(entry["Aicd-Step"] for entry in made)
    assert len(per_step) == 22 and set(per_step.values()) == {1}, per_step  # 2 x (10 weights + promote)


async def test_dev_server_restart_during_pause_resumes(tmp_path: Path) -> None:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"a.yaml": "image: {tag: v0}\n"})
    document = spec_document(
        "restart",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [
            {
                "name": "prod",
                "targets": ["a"],
                "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": "4s"}, {"setWeight": 100}]}},
            }
        ],
    )
    plan = plan_from(document, revision)
    state = tmp_path / "stack"
    stack = EmbeddedTemporal(state, port=0, ui=False, write_info=False)
    try:
        stack.start()
        port = stack.port
        stack.start_worker(task_queue="restart")
        client = await Client.connect(stack.address)
        await start_delivery(client, plan, Trigger("cli", "t"), queue="restart")
        for _ in range(200):
            status = await get_status(client, plan.delivery_id)
            if "a" in status.targets and status.targets["a"].step_kind == "pause":
                break
            await asyncio.sleep(0.05)
        assert status.targets["a"].step_kind == "pause"
        stack.stop_worker()
        stack.stop()  # the server goes away mid-pause; its SQLite file stays
        assert stack.db_path.exists()
        stack = EmbeddedTemporal(state, port=port, ui=False, write_info=False)
        stack.start()
        stack.start_worker(task_queue="restart")
        client = await Client.connect(stack.address)
        status = await get_status(client, plan.delivery_id)
        # State survived the restart (a slow machine may have finished the pause and the last step meanwhile:
        # only the new server and worker can have done that).
        assert status.phase in ("progressing", "succeeded") and status.targets["a"].commits
        result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), 90)
    finally:
        stack.stop()
    assert result.phase == "succeeded", result.reason
    assert [entry["Aicd-Step"] for entry in step_commits(gitops)] == [
        "prod/a/0-setWeight",
        "prod/a/2-setWeight",
        "prod/a/promote",
    ]


def value_write(gitops: str, step: str, value: int, base: str | None) -> CommitRequest:
    """A step of delivery `x@abc` setting v.yaml's `a` to `value`."""
    edits = [FileEdit("v.yaml", {"a": value})]
    return CommitRequest(gitops, "main", "x@abc", step, "aicd", f"aicd: {step}", edits, base=base)


async def test_a_clone_left_with_gits_lock_files_by_a_killed_writer_still_commits(tmp_path: Path) -> None:
    """A writer SIGKILLed inside `git commit` or a ref update leaves git's lock files in its clone; they are
    stale once the clone's lock is ours (every aicd use of the clone holds it), and the next write must
    not fail on them forever."""
    gitops, _ = make_repo(tmp_path, "gitops", {"v.yaml": "a: 1\n"})
    activities = GitOpsActivities(tmp_path / "state")

    first = await activities.commit(value_write(gitops, "s/t/0-setWeight", 2, None))
    git_dir = next((tmp_path / "state" / "gitops").glob("*/.git"))
    for stale in ("index.lock", "HEAD.lock", "refs/heads/main.lock", "packed-refs.lock"):
        (git_dir / stale).write_text("")
    result = await activities.commit(value_write(gitops, "s/t/1-setWeight", 3, first.sha))
    assert result.sha and not result.already_done
    assert [entry["Aicd-Step"] for entry in step_commits(gitops)] == ["s/t/0-setWeight", "s/t/1-setWeight"]
    assert not list(git_dir.rglob("*.lock"))


async def test_a_push_the_remote_keeps_refusing_says_what_git_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock the remote never releases (a receive-pack killed on the server) refuses every push; the error
    that ends the retries names git's reason, not just a count."""
    gitops, _ = make_repo(tmp_path, "gitops", {"v.yaml": "a: 1\n"})
    activities = GitOpsActivities(tmp_path / "state")

    first = await activities.commit(value_write(gitops, "s/t/0-setWeight", 2, None))
    (Path(gitops) / "HEAD.lock").write_text("")
    monkeypatch.setattr(gitops_activities, "MAX_PUSH_ATTEMPTS", 2)
    with pytest.raises(RuntimeError, match=r"still rejected after 2 attempts; git said last: .*HEAD\.lock"):
        await activities.commit(value_write(gitops, "s/t/1-setWeight", 3, first.sha))


# Run by a second writer process: the rollback request pickled at argv[2], on the state dir at argv[1].
ROLLBACK_IN_ANOTHER_PROCESS = """
import asyncio, pickle, sys
from pathlib import Path
from aicd.activities.gitops import GitOpsActivities
request = pickle.loads(Path(sys.argv[2]).read_bytes())
asyncio.run(GitOpsActivities(Path(sys.argv[1])).rollback(request))
"""
# Its pre-commit hook (a hook makes the writer commit through git): the writer's whole process group - it,
# `git commit`, the hook - killed between writing the file and committing it, as a container's end kills it.
KILL_THE_WRITER = "#!/bin/sh\nkill -KILL 0\n"


async def test_a_writer_killed_mid_write_in_a_shared_clone_leaves_nothing_another_trusts(
    tmp_path: Path,
) -> None:
    """Writer processes on one state dir share its clones, one at a time under the clone's lock. One SIGKILLed
    after writing a file and before committing it leaves the file changed in the work tree; a writer that
    last left the clone clean itself must not take the tree as clean: its rollback would find the file
    already restored and commit nothing - the delivery would say rolled back while Git keeps the canary."""
    seed = "image:\n  tag: v0\ncanary:\n  weight: 0\n  tag: v0\n"
    gitops, _ = make_repo(tmp_path, "gitops", {"v.yaml": seed})
    state = tmp_path / "state"
    owner = {"delivery_id": "delivery-x-abc", "started": "2026-01-01T00:00:00+00:00"}
    canary = [FileEdit("v.yaml", {"canary.weight": 10, "canary.tag": "v1"})]
    step = CommitRequest(gitops, "main", "x@abc", "s/t/0-setWeight", "aicd", "aicd: x", canary, **owner)
    await GitOpsActivities(state).commit(step)
    undo = RollbackRequest(
        gitops,
        "main",
        "x@abc",
        "s/t/rollback",
        "aicd",
        "aicd: x rollback",
        ["v.yaml"],
        write=WritePlan("image.tag", "canary.weight", "canary.tag"),
        **owner,
    )
    (tmp_path / "request").write_bytes(pickle.dumps(undo))
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "pre-commit").write_text(KILL_THE_WRITER)
    (hooks / "pre-commit").chmod(0o755)
    env = {
        **os.environ,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.hooksPath",
        "GIT_CONFIG_VALUE_0": str(hooks),
        "PYTHONPATH": str(REPO_ROOT),
    }
    other = subprocess.run(
        [sys.executable, "-c", ROLLBACK_IN_ANOTHER_PROCESS, str(state), str(tmp_path / "request")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert other.returncode == -signal.SIGKILL, other.stderr
    assert "weight: 10" in show(gitops, "main", "v.yaml")  # killed before its commit
    # Temporal retries the rollback on this worker.
    undone = await GitOpsActivities(state).rollback(undo)
    assert undone.sha is not None
    assert show(gitops, "main", "v.yaml") == seed.rstrip("\n")
