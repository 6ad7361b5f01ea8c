"""What one kind of workflow command costs the Temporal server, in CPU: N bare workflows at once, each doing
three of one thing, the server's CPU ms per workflow, minus a bare workflow's. Prices the parts of a
delivery's history (bench/concurrency.py counts them) so a cut can be chosen by what it saves:

- `timer`: a workflow task round trip of its own (a timer fires, a task runs);
- `activity`: an activity on the workflow's queue (started eagerly) and the task its result wakes;
- `remote`: an activity on another queue (matched by the server, like the GitOps writer's) and its task;
- `local`: a local activity (a marker event; no task through the server);
- `upsert`, `patch`: a search-attribute upsert, a `workflow.patched` marker (with its TemporalChangeVersion
  upsert), each followed by a timer, so each in its own workflow task (less `timer`: the command alone);
- `child`: a child workflow (started, run, completed) awaited by the parent.

Figures are CPU time, not wall time; on a busy machine they rise for every kind alike.
Last line: `<kind>_server_ms=X` per kind (per unit, the bare workflow subtracted) and `bare_server_ms`.

    .venv/bin/python bench/server_cost.py [--workflows 200] [--kinds activity local child]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from datetime import timedelta
from statistics import median

import psutil
from _stack import dev_server
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

KINDS = ["timer", "activity", "remote", "local", "upsert", "patch", "child"]
UNITS = 3  # of the kind per workflow
QUEUE = "server-cost"
REMOTE_QUEUE = "server-cost-remote"
PHASE = SearchAttributeKey.for_keyword("AicdPhase")  # registered by the dev server of bench/_stack.py
TIMEOUT = timedelta(seconds=30)


@activity.defn
async def noop(value: int) -> int:
    return value


@workflow.defn
class Priced:
    @workflow.run
    async def run(self, kind: str) -> None:
        for index in range(UNITS if kind != "bare" else 0):
            if kind == "timer":
                await workflow.sleep(0.01)
            elif kind == "activity":
                await workflow.execute_activity(noop, index, start_to_close_timeout=TIMEOUT)
            elif kind == "remote":
                await workflow.execute_activity(
                    noop, index, task_queue=REMOTE_QUEUE, start_to_close_timeout=TIMEOUT
                )
            elif kind == "local":
                await workflow.execute_local_activity(noop, index, start_to_close_timeout=TIMEOUT)
            elif kind == "upsert":
                workflow.upsert_search_attributes([PHASE.value_set(f"phase-{index}")])
                await workflow.sleep(0.01)
            elif kind == "patch":
                workflow.patched(f"priced-{index}")
                await workflow.sleep(0.01)
            elif kind == "child":
                await workflow.execute_child_workflow(
                    Priced.run, "bare", id=f"{workflow.info().workflow_id}-child-{index}"
                )


def dev_server_process() -> psutil.Process:
    for child in psutil.Process().children(recursive=True):
        if child.name().startswith("temporal"):
            return child
    raise RuntimeError("no Temporal dev server among this process's children")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def price(client: Client, server: psutil.Process, kind: str, count: int) -> tuple[float, int]:
    """Server CPU ms per workflow of `kind`, and the events of one of their histories."""
    before = cpu_seconds(server)
    handles = await asyncio.gather(
        *(
            client.start_workflow(Priced.run, kind, id=f"{kind}-{uuid.uuid4().hex[:12]}", task_queue=QUEUE)
            for _ in range(count)
        )
    )
    await asyncio.gather(*(handle.result() for handle in handles))
    spent = cpu_seconds(server) - before
    return 1000 * spent / count, len((await handles[0].fetch_history()).events)


async def run(count: int, kinds: list[str], rounds: int) -> dict[str, tuple[float, int]]:
    figures: dict[str, list[float]] = {kind: [] for kind in ["bare", *kinds]}
    events: dict[str, int] = {}
    async with dev_server() as env:
        client = env.client
        server = dev_server_process()
        runner = UnsandboxedWorkflowRunner()  # this module's workflows only; no sandbox needed to price them
        async with (
            Worker(
                client,
                task_queue=QUEUE,
                workflows=[Priced],
                activities=[noop],
                workflow_runner=runner,
                max_concurrent_activities=200,
            ),
            Worker(client, task_queue=REMOTE_QUEUE, activities=[noop], max_concurrent_activities=200),
        ):
            for _ in range(rounds):  # rounds interleave the kinds, so a busy moment hits them all
                for kind in figures:
                    ms, events[kind] = await price(client, server, kind, count)
                    figures[kind].append(ms)
    return {kind: (median(values), events[kind]) for kind, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=KINDS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures = asyncio.run(run(args.workflows, args.kinds, args.rounds))
    bare, bare_events = figures["bare"]
    print(
        f"\nserver CPU ms, median of {args.rounds} rounds of {args.workflows} workflows ({os.cpu_count()} cores)"
    )
    print(f"{'kind':9} {'per wf':>7} {'per unit':>9} {'events/unit':>12}")
    print(f"{'bare':9} {bare:7.1f} {'':>9} {bare_events:12d}")
    parts = [f"bare_server_ms={bare:.1f}"]
    for kind in args.kinds:
        ms, events = figures[kind]
        unit = (ms - bare) / UNITS
        print(f"{kind:9} {ms:7.1f} {unit:9.1f} {(events - bare_events) / UNITS:12.1f}")
        parts.append(f"{kind}_server_ms={unit:.1f}")
    print(" ".join(parts), flush=True)


if __name__ == "__main__":
    main()
    os._exit(0)  # as bench/concurrency.py: skip the SDK runtime's finalization at exit
