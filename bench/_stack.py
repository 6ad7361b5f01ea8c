"""The embedded stack the engine benches run on: a real Temporal dev server and worker, real Git repos."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.testing import WorkflowEnvironment

from aicd.testing.engine import start_dev_server


@asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server(["system.enableActivityEagerExecution=true"])
    try:
        yield env
    finally:
        await env.shutdown()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]
