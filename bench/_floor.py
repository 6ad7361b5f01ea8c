"""Temporal's own floor for a delivery's shape: a parent workflow and one child that run, one after another,
as many activities as an aicd delivery and its rollout do, each doing nothing, and upsert a search attribute as
often as they do (each upsert is a write to Temporal's visibility store). What the Temporal server and a
Python worker spend on these is what any delivery of that shape costs before aicd does any work.

Run as the floor's worker process by bench/concurrency.py (`python bench/_floor.py --address A --task-queue Q`).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.worker import Worker

PHASE = SearchAttributeKey.for_keyword("AicdPhase")  # registered by the bench's dev server (aicd.search)

ACTIVITY_TIMEOUT = timedelta(seconds=60)


@dataclass
class Shape:
    """Activities run by the parent (half before its child, half after) and by its one child, and the search
    attribute upserts of each (one before each activity, the rest at the end)."""

    parent_activities: int
    child_activities: int
    parent_upserts: int = 0
    child_upserts: int = 0


def _upsert(step: int, upserts: int, steps: int) -> None:
    """The upserts that come before activity `step`: one before each, the rest before the last."""
    count = (1 if step < upserts else 0) if step < steps - 1 else max(0, upserts - (steps - 1))
    for _ in range(count):
        workflow.upsert_search_attributes([PHASE.value_set(f"step-{step}")])


@activity.defn
async def nothing(step: int) -> int:
    return step


@workflow.defn
class FloorRollout:
    @workflow.run
    async def run(self, activities: int, upserts: int = 0) -> int:
        for step in range(activities):
            _upsert(step, upserts, activities)
            await workflow.execute_activity(
                nothing,
                step,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        return activities


@workflow.defn
class FloorDelivery:
    @workflow.run
    async def run(self, shape: Shape) -> int:
        before = shape.parent_activities // 2
        for step in range(shape.parent_activities):
            if step == before:
                await workflow.execute_child_workflow(
                    FloorRollout.run,
                    args=[shape.child_activities, shape.child_upserts],
                    id=f"{workflow.info().workflow_id}--child",
                )
            _upsert(step, shape.parent_upserts, shape.parent_activities)
            await workflow.execute_activity(
                nothing,
                step,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        return shape.parent_activities + shape.child_activities


async def serve(address: str, queue: str) -> None:
    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[FloorDelivery, FloorRollout],
        activities=[nothing],
        max_concurrent_activities=200,
    )
    await worker.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.task_queue))


if __name__ == "__main__":
    main()
