"""Step overhead: a delivery of N setWeight steps on a `git` target against the floor of the same N
commits and pushes done directly with git, measured in one run.

The breakdown (from the target workflow's history, per step): waiting for a worker (write activity scheduled
-> started), the write itself (started -> completed: fetch check, edit, commit, push, sync), and the
workflow's own turn between one step's write and the next (completed -> next scheduled: a workflow task,
status, timers).

Last line: steps=N delivery_s=X floor_s=Y overhead_ratio=Z queue_ms=.. write_ms=.. workflow_ms=..
(goal: overhead_ratio <= 1.5)"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _stack import dev_server
from temporalio.client import WorkflowHistory

from aicd.client import handle_for, start_delivery
from aicd.messages import Trigger
from aicd.testing.engine import commits, git, make_repo, plan_from, running_worker, spec_document


def floor_seconds(root: Path, steps: int) -> float:
    """N commits + pushes of the same kind of edit, with plain git in a clone."""
    bare, _ = make_repo(root, "floor", {"apps/web/values.yaml": "image:\n  tag: v0\ncanary:\n  weight: 0\n"})
    work = root / "floor-clone"
    git("clone", "-q", bare, str(work))
    started = time.perf_counter()
    for step in range(steps):
        (work / "apps/web/values.yaml").write_text(
            f"image:\n  tag: v0\ncanary:\n  tag: v1\n  weight: {step}\n"
        )
        git("-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qam", f"step {step}", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
    return time.perf_counter() - started


WRITES = {"apply_step", "gitops_commit"}


def breakdown_ms(history: WorkflowHistory) -> dict[str, float]:
    """Mean milliseconds per write: queue (scheduled -> started), write (started -> completed), workflow
    (completed -> the next write scheduled)."""
    at = {event.event_id: event.event_time.ToMicroseconds() / 1000 for event in history.events}
    queue, write, workflow_turn, last_done = [], [], [], None
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name in WRITES and last_done:
                workflow_turn.append(at[event.event_id] - last_done)
        elif event.HasField("activity_task_started_event_attributes"):
            queue.append(
                at[event.event_id] - at[event.activity_task_started_event_attributes.scheduled_event_id]
            )
        elif event.HasField("activity_task_completed_event_attributes"):
            write.append(
                at[event.event_id] - at[event.activity_task_completed_event_attributes.started_event_id]
            )
            last_done = at[event.event_id]
    return {
        name: sum(values) / len(values) if values else 0.0
        for name, values in (("queue", queue), ("write", write), ("workflow", workflow_turn))
    }


async def delivery_seconds(root: Path, steps: int) -> tuple[float, dict[str, float]]:
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {"apps/web/values.yaml": "image:\n  tag: v0\n"})
    weights = [round(100 * (index + 1) / steps) for index in range(steps)]
    document = spec_document(
        "bench",
        source,
        gitops,
        {"web": {"kind": "git", "path": "apps/web/values.yaml"}},
        [
            {
                "name": "prod",
                "targets": ["web"],
                "strategy": {"canary": {"steps": [{"setWeight": w} for w in weights]}},
            }
        ],
    )
    plan = plan_from(document, revision)
    async with dev_server() as env, running_worker(env.client, root / "state") as queue:
        started = time.perf_counter()
        await start_delivery(env.client, plan, Trigger("cli", "bench"), queue=queue)
        result = await handle_for(env.client, plan.delivery_id).result()
        seconds = time.perf_counter() - started
        history = await env.client.get_workflow_handle(f"{plan.delivery_id}--prod--web").fetch_history()
    assert result.phase == "succeeded", result.reason
    made = [entry for entry in commits(gitops) if "Aicd-Step" in entry]
    assert len(made) == steps + 1, len(made)  # the steps and the promotion
    # The floor pushes N commits; the delivery pushes N + 1 (promotion): compare per commit.
    return seconds * steps / (steps + 1), breakdown_ms(history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        floor = floor_seconds(Path(root), args.steps)
        delivery, parts = asyncio.run(delivery_seconds(Path(root), args.steps))
    print(
        f"floor: {args.steps} commits+pushes with git: {floor:.3f}s ({1000 * floor / args.steps:.1f} ms each)"
    )
    print(f"delivery: {args.steps} setWeight steps (commit, push, sync, report): {delivery:.3f}s")
    print(
        "per step: waiting for a worker {queue:.1f} ms, the write (check, edit, commit, push, sync) {write:.1f}"
        " ms, the workflow's turn {workflow:.1f} ms".format(**parts)
    )
    print(
        f"steps={args.steps} delivery_s={delivery:.3f} floor_s={floor:.3f} overhead_ratio={delivery / floor:.2f}"
        f" queue_ms={parts['queue']:.1f} write_ms={parts['write']:.1f} workflow_ms={parts['workflow']:.1f}"
    )


if __name__ == "__main__":
    main()
