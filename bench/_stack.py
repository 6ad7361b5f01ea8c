"""The embedded stack the engine benches run on: a real Temporal dev server and worker, real Git repos."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.testing import WorkflowEnvironment

from aicd import search
from aicd.testing.engine import TEMPORAL_BIN

EXTRA_ARGS = ["--dynamic-config-value", "system.enableActivityEagerExecution=true"]


@asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL_BIN,
        search_attributes=list(search.ALL),
        dev_server_log_level="error",
        dev_server_extra_args=EXTRA_ARGS,
    )
    try:
        yield env
    finally:
        await env.shutdown()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]
