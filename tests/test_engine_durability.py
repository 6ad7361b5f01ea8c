"""Durability: the worker SIGKILLed in the middle of a delivery (several points) and the Temporal dev
server stopped and restarted from its SQLite file during a pause; the delivery completes and no step has
two commits. Real processes: `aicd dev`'s EmbeddedTemporal and `python worker.py`."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

from temporalio.client import Client

from aicd.activities.gitops import CommitRequest, FileEdit, GitOpsActivities
from aicd.client import get_status, handle_for, start_delivery
from aicd.dev.processes import signal_group
from aicd.dev.temporal import EmbeddedTemporal
from aicd.messages import Trigger
from aicd.testing.engine import commits, make_repo, plan_from, spec_document
from aicd.testing.polling import poll_until


def step_commits(gitops: str) -> list[dict[str, str]]:
    return [entry for entry in commits(gitops) if "Aicd-Step" in entry]


def kill_worker(stack: EmbeddedTemporal) -> None:
    assert stack.worker is not None
    signal_group(stack.worker.pid, signal.SIGKILL)
    stack.stop_worker()


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
            kill_worker(stack)
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
        assert status.phase == "progressing" and status.targets["a"].commits  # state survived the restart
        result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), 90)
    finally:
        stack.stop()
    assert result.phase == "succeeded", result.reason
    assert [entry["Aicd-Step"] for entry in step_commits(gitops)] == [
        "prod/a/0-setWeight",
        "prod/a/2-setWeight",
        "prod/a/promote",
    ]


async def test_a_clone_left_with_gits_lock_files_by_a_killed_writer_still_commits(tmp_path: Path) -> None:
    """A writer SIGKILLed inside `git commit` or a ref update leaves git's lock files in its clone; they are
    stale once the clone's lock is ours (every aicd use of the clone holds it), and the next write must
    not fail on them forever."""
    gitops, _ = make_repo(tmp_path, "gitops", {"v.yaml": "a: 1\n"})
    activities = GitOpsActivities(tmp_path / "state")

    def request(step: str, value: int, base: str | None) -> CommitRequest:
        edits = [FileEdit("v.yaml", {"a": value})]
        return CommitRequest(gitops, "main", "x@abc", step, "aicd", f"aicd: {step}", edits, base=base)

    first = await activities.commit(request("s/t/0-setWeight", 2, None))
    git_dir = next((tmp_path / "state" / "gitops").glob("*/.git"))
    for stale in ("index.lock", "HEAD.lock", "refs/heads/main.lock", "packed-refs.lock"):
        (git_dir / stale).write_text("")
    result = await activities.commit(request("s/t/1-setWeight", 3, first.sha))
    assert result.sha and not result.already_done
    assert [entry["Aicd-Step"] for entry in step_commits(gitops)] == ["s/t/0-setWeight", "s/t/1-setWeight"]
    assert not list(git_dir.rglob("*.lock"))
