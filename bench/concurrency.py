"""Concurrency: N deliveries of different apps pushing into one GitOps repository at once, on worker
processes of their own (as worker hosts would be), in three fleets:

- `one`: one worker (`--role all`);
- `three-writer`: three workers, one of them the GitOps writer (`--role all` + 2 x `--role delivery`):
  every push goes through one process, which commits steps one by one and pushes them together;
- `three-deployed`: three workers as `deploy/` runs them (`--role gitops-writer` + 2 x `--role delivery`):
  the writer process only writes, workflows and every other activity run in the two others;
- `three-racing`: three `--role all` workers, each pushing from its own clone (how three workers ran before
  the writer queue): rejected pushes are refetched and retried;
- `temporal-floor`: no aicd at all: a parent workflow and one child running as many activities (each doing
  nothing, bench/_floor.py) and search attribute upserts as the aicd fleet measured before it did per delivery - what Temporal and a Python
  worker cost for a delivery's shape on this machine, the ceiling of any delivery of that shape.

Per fleet: deliveries/s, successful pushes (the branch's reflog), rejected pushes retried, commits lost
(must be 0), p50/p95 latency of a step's write activity (scheduled to completed), peak worker RSS, workflow
tasks, history events, activity tasks scheduled through the server (local activities are markers, not counted)
and search attribute upserts per delivery (in the delivery's and its rollout's histories); the
writer's commits/s and commits per push; and where the CPU went: CPU seconds per delivery of the Temporal
dev server, the worker processes, their child processes (git: reaped children's CPU), the bench itself and
everything else on the machine, against the machine's utilisation over the run (1.0 = every core busy).
Last line: key=value per fleet and the ratio of each three-worker fleet's throughput to one worker's.

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
from _floor import FloorDelivery, Shape
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
    "three-deployed": ["gitops-writer", "delivery", "delivery"],
    "three-racing": ["all", "all", "all"],
    "temporal-floor": ["floor"],
}
FLOOR = "temporal-floor"
# A delivery of this bench, for a floor run on its own.
DEFAULT_SHAPE = Shape(parent_activities=5, child_activities=3, parent_upserts=6, child_upserts=1)
WRITES = {"apply_step", "gitops_commit"}


@dataclass
class Cpu:
    """CPU seconds over one run, by who spent them, and the machine's total capacity over it."""

    server: float
    workers: list[float]
    git: float  # the workers' children (git processes), counted as they are reaped
    bench: float
    machine_busy: float
    machine_total: float

    @property
    def others(self) -> float:
        """Busy time of processes outside this run (other users of the machine)."""
        return max(0.0, self.machine_busy - self.server - sum(self.workers) - self.git - self.bench)

    @property
    def utilisation(self) -> float:
        return self.machine_busy / self.machine_total if self.machine_total else 0.0


@dataclass
class Figures:
    seconds: float
    commits: int
    pushes: int
    rejected: int
    lost: int
    step_p50_ms: float
    step_p95_ms: float
    peak_rss_mb: float
    workflow_tasks: float  # per delivery, its rollout's included
    events: float  # history events per delivery, its rollout's included
    shape: Shape  # activities per delivery (rounded) and per rollout
    cpu: Cpu


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


def events_of(history: WorkflowHistory, attributes: str) -> int:
    """How many events of the history carry `attributes` (e.g. "workflow_task_completed_event_attributes")."""
    return sum(1 for event in history.events if event.HasField(attributes))


def workflow_tasks(history: WorkflowHistory) -> int:
    return events_of(history, "workflow_task_completed_event_attributes")


def activities(history: WorkflowHistory) -> int:
    return events_of(history, "activity_task_scheduled_event_attributes")


def upserts(history: WorkflowHistory) -> int:
    return events_of(history, "upsert_workflow_search_attributes_event_attributes")


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
        if role == "floor":
            argv = [sys.executable, str(Path(__file__).parent / "_floor.py"), "--address", address]
            argv += ["--task-queue", queue]
        else:
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
    wanted = (
        {queue: len(roles)}
        if roles == FLEETS[FLOOR]
        else {
            queue: sum(role != "gitops-writer" for role in roles),
            writer_queue(queue): sum(role != "delivery" for role in roles),
        }
    )
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


def dev_server_process() -> psutil.Process:
    """The Temporal dev server: a child process of this one (the SDK starts it)."""
    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.Error):
            if child.name().startswith("temporal"):
                return child
    raise RuntimeError("no Temporal dev server among this process's children")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def cpu_now(server: psutil.Process, workers: list[psutil.Process]) -> Cpu:
    """CPU seconds spent so far by each party (subtract two of these for a run's)."""
    worker_times = [worker.cpu_times() for worker in workers]
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    total = sum(machine)
    return Cpu(
        server=cpu_seconds(server),
        workers=[times.user + times.system for times in worker_times],
        git=sum(times.children_user + times.children_system for times in worker_times),
        bench=cpu_seconds(psutil.Process()),
        machine_busy=total - idle,
        machine_total=total,
    )


def cpu_spent(before: Cpu, after: Cpu) -> Cpu:
    return Cpu(
        server=after.server - before.server,
        workers=[end - start for start, end in zip(before.workers, after.workers, strict=True)],
        git=after.git - before.git,
        bench=after.bench - before.bench,
        machine_busy=after.machine_busy - before.machine_busy,
        machine_total=after.machine_total - before.machine_total,
    )


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
        server, workers = dev_server_process(), [psutil.Process(p.pid) for p in processes]
        cpu_before = cpu_now(server, workers)
        started = time.perf_counter()
        await asyncio.gather(
            *(start_delivery(client, plan, Trigger("cli", "bench"), queue=queue) for plan in plans)
        )
        results = await asyncio.gather(*(handle_for(client, plan.delivery_id).result() for plan in plans))
        seconds = time.perf_counter() - started
        cpu = cpu_spent(cpu_before, cpu_now(server, workers))
        stop.set()
        await sampler
    rejected, latencies, tasks, events = 0, [], 0, 0
    parent_activities = child_activities = parent_upserts = child_upserts = 0
    for plan in plans:
        history = await client.get_workflow_handle(f"{plan.delivery_id}--prod--web").fetch_history()
        parent = await client.get_workflow_handle(plan.delivery_id).fetch_history()
        rejected += rejected_pushes(history)
        latencies += write_latencies_ms(history)
        tasks += workflow_tasks(history) + workflow_tasks(parent)
        events += len(history.events) + len(parent.events)
        parent_activities += activities(parent)
        child_activities += activities(history)
        parent_upserts += upserts(parent)
        child_upserts += upserts(history)
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
        commits=len(claimed),
        pushes=len(reflog),
        rejected=rejected,
        lost=len(claimed - on_branch),
        step_p50_ms=percentile(latencies, 0.5),
        step_p95_ms=percentile(latencies, 0.95),
        peak_rss_mb=max(peak),
        workflow_tasks=tasks / count,
        events=events / count,
        shape=Shape(
            round(parent_activities / count),
            round(child_activities / count),
            round(parent_upserts / count),
            round(child_upserts / count),
        ),
        cpu=cpu,
    )


async def run_floor(client: Client, root: Path, count: int, shape: Shape) -> Figures:
    """`count` workflows of the delivery's shape at once, on the floor's worker (bench/_floor.py)."""
    queue = f"bench-{root.name}"
    address = client.service_client.config.target_host
    async with worker_processes(address, queue, FLEETS[FLOOR], root) as processes:
        await polling(client, queue, FLEETS[FLOOR])
        server, workers = dev_server_process(), [psutil.Process(p.pid) for p in processes]
        peak = psutil.Process(processes[0].pid).memory_info().rss / 2**20
        cpu_before = cpu_now(server, workers)
        started = time.perf_counter()
        ids = [f"floor-{root.name}-{index}" for index in range(count)]
        handles = await asyncio.gather(
            *(client.start_workflow(FloorDelivery.run, shape, id=id, task_queue=queue) for id in ids)
        )
        await asyncio.gather(*(handle.result() for handle in handles))
        seconds = time.perf_counter() - started
        cpu = cpu_spent(cpu_before, cpu_now(server, workers))
        peak = max(peak, psutil.Process(processes[0].pid).memory_info().rss / 2**20)
    tasks = events = 0
    for id in ids:
        for history in (
            await client.get_workflow_handle(id).fetch_history(),
            await client.get_workflow_handle(f"{id}--child").fetch_history(),
        ):
            tasks += workflow_tasks(history)
            events += len(history.events)
    return Figures(
        seconds=seconds,
        commits=0,
        pushes=0,
        rejected=0,
        lost=0,
        step_p50_ms=0.0,
        step_p95_ms=0.0,
        peak_rss_mb=peak,
        workflow_tasks=tasks / count,
        events=events / count,
        shape=shape,
        cpu=cpu,
    )


async def run(count: int, fleets: list[str]) -> dict[str, Figures]:
    figures = {}
    async with dev_server() as env:
        shape = DEFAULT_SHAPE
        for fleet in fleets:
            with tempfile.TemporaryDirectory(prefix=f"{fleet}-") as root:
                if fleet == FLOOR:
                    figures[fleet] = await run_floor(env.client, Path(root), count, shape)
                else:
                    figures[fleet] = await run_fleet(env.client, Path(root), count, FLEETS[fleet])
                    shape = figures[fleet].shape
            print(f"{fleet}: {figures[fleet]}", flush=True)
    return figures


def print_cpu(figures: dict[str, Figures], count: int, cores: int) -> None:
    """Where the CPU went, per delivery, and whether the machine's cores were saturated."""
    print(f"\nCPU ms per delivery ({cores} cores; utilisation 1.00 = all of them busy for the whole run)")
    print(
        f"{'fleet':14} {'server':>7} {'workers':>8} {'git':>6} {'bench':>6} {'others':>7} {'util':>5}"
        f" {'commits/s':>10} {'per push':>9}  per worker process"
    )
    for fleet, f in figures.items():
        c = f.cpu
        per = [1000 * seconds / count for seconds in c.workers]
        print(
            f"{fleet:14} {1000 * c.server / count:7.0f} {sum(per):8.0f} {1000 * c.git / count:6.0f}"
            f" {1000 * c.bench / count:6.0f} {1000 * c.others / count:7.0f} {c.utilisation:5.2f}"
            f" {f.commits / f.seconds:10.1f} {f.commits / max(1, f.pushes):9.1f}  "
            + " ".join(f"{ms:.0f}" for ms in per)
        )


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
        f"{'fleet':14} {'deliv/s':>8} {'pushes':>7} {'rejected':>9} {'lost':>5} {'p50 ms':>8} {'p95 ms':>8}"
        f" {'RSS MB':>7} {'wf tasks':>9} {'events':>7} {'activities':>11} {'upserts':>8}"
    )
    for fleet, f in figures.items():
        print(
            f"{fleet:14} {args.deliveries / f.seconds:8.2f} {f.pushes:7d} {f.rejected:9d} {f.lost:5d}"
            f" {f.step_p50_ms:8.0f} {f.step_p95_ms:8.0f} {f.peak_rss_mb:7.0f} {f.workflow_tasks:9.1f}"
            f" {f.events:7.1f} {f.shape.parent_activities:5d} + {f.shape.child_activities:3d}"
            f" {f.shape.parent_upserts:4d} + {f.shape.child_upserts}"
        )
    print_cpu(figures, args.deliveries, os.cpu_count() or 1)
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
            f"{key}_workflow_tasks={f.workflow_tasks:.1f}",
            f"{key}_events={f.events:.1f}",
            f"{key}_commits_per_push={f.commits / max(1, f.pushes):.1f}",
            f"{key}_util={f.cpu.utilisation:.2f}",
            f"{key}_server_ms={1000 * f.cpu.server / args.deliveries:.0f}",
            f"{key}_worker_ms={1000 * sum(f.cpu.workers) / args.deliveries:.0f}",
            f"{key}_git_ms={1000 * f.cpu.git / args.deliveries:.0f}",
        ]
    for fleet in FLEETS:
        if fleet != "one" and "one" in figures and fleet in figures and fleet != FLOOR:
            key = fleet.replace("-", "_")
            parts.append(f"{key}_vs_one={figures['one'].seconds / figures[fleet].seconds:.2f}")
    if "one" in figures and FLOOR in figures:  # how much of the floor's throughput one aicd worker reaches
        parts.append(f"one_vs_floor={figures[FLOOR].seconds / figures['one'].seconds:.2f}")
    print(" ".join(parts), flush=True)


if __name__ == "__main__":
    main()
    # The figures are out; skip interpreter finalization, which the Temporal SDK's runtime threads can abort
    # (PyGILState_Release) after a run this long, turning a finished bench into a non-zero exit.
    os._exit(0)
