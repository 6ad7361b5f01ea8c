"""Concurrency: N deliveries of different apps pushing into one GitOps repo at once, through two workers
with their own clones (two worker hosts). Counts push retries and commits lost (must be 0).

Last line: deliveries=N seconds=X deliveries_per_s=Y push_retries=R lost_commits=L"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from _stack import dev_server
from temporalio.client import Client, WorkflowHistory

from aicd.activities import WorkerSettings
from aicd.client import handle_for, start_delivery
from aicd.messages import Trigger
from aicd.testing.engine import commits, make_repo, plan_from, running_worker, spec_document
from aicd.worker import build_worker


def push_retries(history: WorkflowHistory) -> int:
    """Rejected pushes that the step activities of one workflow refetched and re-applied."""

    def count(value: object) -> int:
        if isinstance(value, dict):
            return int(value.get("push_retries", 0)) + sum(count(item) for item in value.values())
        if isinstance(value, list):
            return sum(count(item) for item in value)
        return 0

    total = 0
    for event in history.events:
        if event.HasField("activity_task_completed_event_attributes"):
            for payload in event.activity_task_completed_event_attributes.result.payloads:
                total += count(json.loads(payload.data))
    return total


async def run(root: Path, count: int) -> tuple[float, int, int]:
    apps = [f"app-{index:03d}" for index in range(count)]
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {f"apps/{app}/values.yaml": "image:\n  tag: v0\n" for app in apps})
    steps = [{"setWeight": 50}, {"setWeight": 100}]
    plans = [
        plan_from(
            spec_document(
                app,
                source,
                gitops,
                {"web": {"kind": "git", "path": f"apps/{app}/values.yaml"}},
                [{"name": "prod", "targets": ["web"], "strategy": {"canary": {"steps": steps}}}],
            ),
            revision,
        )
        for app in apps
    ]
    async with dev_server() as env, running_worker(env.client, root / "state-a") as queue:
        second = await Client.connect(env.client.service_client.config.target_host)
        async with build_worker(second, WorkerSettings(root / "state-b"), queue):
            started = time.perf_counter()
            await asyncio.gather(
                *(start_delivery(env.client, plan, Trigger("cli", "bench"), queue=queue) for plan in plans)
            )
            results = await asyncio.gather(
                *(handle_for(env.client, plan.delivery_id).result() for plan in plans)
            )
            seconds = time.perf_counter() - started
            retries = 0
            for plan in plans:
                retries += push_retries(
                    await env.client.get_workflow_handle(f"{plan.delivery_id}--prod--web").fetch_history()
                )
    failed = [result for result in results if result.phase != "succeeded"]
    assert not failed, failed[:3]
    on_branch = {entry["sha"] for entry in commits(gitops)}
    claimed = {sha for result in results for sha in result.commits}
    lost = len(claimed - on_branch)
    expected = count * (len(steps) + 1)
    assert len(claimed) == expected, (len(claimed), expected)
    return seconds, retries, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        seconds, retries, lost = asyncio.run(run(Path(root), args.deliveries))
    print(
        f"{args.deliveries} deliveries x 3 commits into one repo in {seconds:.2f}s; {retries} rejected pushes retried"
    )
    print(
        f"deliveries={args.deliveries} seconds={seconds:.2f} deliveries_per_s={args.deliveries / seconds:.2f}"
        f" push_retries={retries} lost_commits={lost}"
    )


if __name__ == "__main__":
    main()
