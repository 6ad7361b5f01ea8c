"""Temporal's own floor for a delivery's shape: a parent workflow and one child that run, one after another,
as many activities as an aicd delivery and its rollout do, each doing nothing. What the Temporal server and a
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
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

ACTIVITY_TIMEOUT = timedelta(seconds=60)


@dataclass
class Shape:
    """Activities run by the parent (half before its child, half after) and by its one child."""

    parent_activities: int
    child_activities: int


@activity.defn
async def nothing(step: int) -> int:
    return step


@workflow.defn
class FloorRollout:
    @workflow.run
    async def run(self, activities: int) -> int:
        for step in range(activities):
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
                    FloorRollout.run, shape.child_activities, id=f"{workflow.info().workflow_id}--child"
                )
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
