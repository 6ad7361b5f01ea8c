"""Concurrency: N deliveries of different apps pushing into one GitOps repository at once, on worker
processes of their own (as worker hosts would be), in three fleets:

- `one`: one worker (`--role all`);
- `three-writer`: three workers, one of them the GitOps writer (`--role all` + 2 x `--role delivery`):
  every push goes through one process, which commits steps one by one and pushes them together;
- `three-racing`: three `--role all` workers, each pushing from its own clone (how three workers ran before
  the writer queue): rejected pushes are refetched and retried.

Per fleet: deliveries/s, successful pushes (the branch's reflog), rejected pushes retried, commits lost
(must be 0), p50/p95 latency of a step's write activity (scheduled to completed), peak worker RSS.
Last line: key=value per fleet and the ratio of the writer fleet's throughput to one worker's.

    .venv/bin/python bench/concurrency.py                      # 50 deliveries, the three fleets
    .venv/bin/python bench/concurrency.py --deliveries 500 --fleets one three-writer
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
from _stack import dev_server, percentile
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHistory

from aicd.client import handle_for, start_delivery
from aicd.messages import Trigger
from aicd.testing.engine import commits, make_repo, plan_from, spec_document
from aicd.workflows.common import writer_queue

FLEETS = {
    "one": ["all"],
    "three-writer": ["all", "delivery", "delivery"],
    "three-racing": ["all", "all", "all"],
}
WRITES = {"apply_step", "gitops_commit"}


@dataclass
class Figures:
    seconds: float
    pushes: int
    rejected: int
    lost: int
    step_p50_ms: float
    step_p95_ms: float
    peak_rss_mb: float


def rejected_pushes(history: WorkflowHistory) -> int:
    """Rejected pushes that the write activities of one workflow refetched and re-applied."""

    def count(value: object) -> int:
        if isinstance(value, dict):
            return int(value.get("push_retries", 0)) + sum(count(item) for item in value.values())
        if isinstance(value, list):
            return sum(count(item) for item in value)
        return 0

    return sum(
        count(json.loads(payload.data))
        for event in history.events
        if event.HasField("activity_task_completed_event_attributes")
        for payload in event.activity_task_completed_event_attributes.result.payloads
    )


def write_latencies_ms(history: WorkflowHistory) -> list[float]:
    scheduled: dict[int, float] = {}
    latencies = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name in WRITES:
                scheduled[event.event_id] = event.event_time.ToMicroseconds() / 1000
        elif event.HasField("activity_task_completed_event_attributes"):
            origin = event.activity_task_completed_event_attributes.scheduled_event_id
            if origin in scheduled:
                latencies.append(event.event_time.ToMicroseconds() / 1000 - scheduled[origin])
    return latencies


@asynccontextmanager
async def worker_processes(
    address: str, queue: str, roles: list[str], root: Path
) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    processes = []
    for index, role in enumerate(roles):
        argv = [sys.executable, "-m", "aicd.worker", "--address", address, "--task-queue", queue]
        argv += ["--state-dir", str(root / f"state-{index}"), "--role", role]
        processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


async def polling(client: Client, queue: str, roles: list[str]) -> None:
    """Wait until every worker process polls its queues, so start-up is not counted."""
    wanted = {
        queue: sum(role != "gitops-writer" for role in roles),
        writer_queue(queue): sum(role != "delivery" for role in roles),
    }
    for _ in range(600):
        seen = {}
        for name in wanted:
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=name),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                )
            )
            seen[name] = len({poller.identity for poller in response.pollers})
        if seen == wanted:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"workers not polling: {seen} of {wanted}")


async def sample_rss(
    processes: list[subprocess.Popen[bytes]], peak: list[float], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        for index, process in enumerate(processes):
            with suppress(psutil.Error):
                peak[index] = max(peak[index], psutil.Process(process.pid).memory_info().rss / 2**20)
        await asyncio.sleep(0.5)


async def run_fleet(client: Client, root: Path, count: int, roles: list[str]) -> Figures:
    apps = [f"app-{index:03d}" for index in range(count)]
    source, revision = make_repo(root, "source", {"README": "x\n"})
    gitops, _ = make_repo(root, "gitops", {f"apps/{app}/values.yaml": "image:\n  tag: v0\n" for app in apps})
    subprocess.run(["git", "-C", gitops, "config", "core.logAllRefUpdates", "always"], check=True)
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
    queue = f"bench-{root.name}"
    address = client.service_client.config.target_host
    async with worker_processes(address, queue, roles, root) as processes:
        await polling(client, queue, roles)
        peak = [0.0] * len(processes)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(processes, peak, stop))
        started = time.perf_counter()
        await asyncio.gather(
            *(start_delivery(client, plan, Trigger("cli", "bench"), queue=queue) for plan in plans)
        )
        results = await asyncio.gather(*(handle_for(client, plan.delivery_id).result() for plan in plans))
        seconds = time.perf_counter() - started
        stop.set()
        await sampler
    rejected, latencies = 0, []
    for plan in plans:
        history = await client.get_workflow_handle(f"{plan.delivery_id}--prod--web").fetch_history()
        rejected += rejected_pushes(history)
        latencies += write_latencies_ms(history)
    failed = [result for result in results if result.phase != "succeeded"]
    assert not failed, failed[:3]
    on_branch = {entry["sha"] for entry in commits(gitops)}
    claimed = {sha for result in results for sha in result.commits}
    assert len(claimed) == count * (len(steps) + 1), (len(claimed), count * (len(steps) + 1))
    reflog = subprocess.run(
        ["git", "-C", gitops, "reflog", "show", "--format=%H", "refs/heads/main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return Figures(
        seconds=seconds,
        pushes=len(reflog),
        rejected=rejected,
        lost=len(claimed - on_branch),
        step_p50_ms=percentile(latencies, 0.5),
        step_p95_ms=percentile(latencies, 0.95),
        peak_rss_mb=max(peak),
    )


async def run(count: int, fleets: list[str]) -> dict[str, Figures]:
    figures = {}
    async with dev_server() as env:
        for fleet in fleets:
            with tempfile.TemporaryDirectory(prefix=f"{fleet}-") as root:
                figures[fleet] = await run_fleet(env.client, Path(root), count, FLEETS[fleet])
            print(f"{fleet}: {figures[fleet]}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--fleets", nargs="+", choices=list(FLEETS), default=list(FLEETS))
    args = parser.parse_args()
    os.environ.setdefault("AICD_LOG_FORMAT", "text")
    figures = asyncio.run(run(args.deliveries, args.fleets))
    print(f"\n{args.deliveries} deliveries x 3 commits into one GitOps repository ({os.cpu_count()} cores)")
    print(
        f"{'fleet':14} {'deliv/s':>8} {'pushes':>7} {'rejected':>9} {'lost':>5} {'p50 ms':>8} {'p95 ms':>8} {'RSS MB':>7}"
    )
    for fleet, f in figures.items():
        print(
            f"{fleet:14} {args.deliveries / f.seconds:8.2f} {f.pushes:7d} {f.rejected:9d} {f.lost:5d}"
            f" {f.step_p50_ms:8.0f} {f.step_p95_ms:8.0f} {f.peak_rss_mb:7.0f}"
        )
    parts = [f"deliveries={args.deliveries}"]
    for fleet, f in figures.items():
        key = fleet.replace("-", "_")
        parts += [
            f"{key}_per_s={args.deliveries / f.seconds:.2f}",
            f"{key}_pushes={f.pushes}",
            f"{key}_rejected={f.rejected}",
            f"{key}_lost={f.lost}",
            f"{key}_step_p95_ms={f.step_p95_ms:.0f}",
            f"{key}_rss_mb={f.peak_rss_mb:.0f}",
        ]
    if "one" in figures and "three-writer" in figures:
        parts.append(f"three_writer_vs_one={figures['one'].seconds / figures['three-writer'].seconds:.2f}")
    print(" ".join(parts))


if __name__ == "__main__":
    main()
