"""Temporal worker entry point (same as `aicd worker`): runs every aicd workflow and activity.

Reads the standard Temporal client settings (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,
TEMPORAL_TLS_*), so the same worker runs against the embedded dev server, a cluster or Temporal Cloud.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from activities import WorkerSettings, all_activities
from aicd.temporal import connect, task_queue
from workflows import ALL_WORKFLOWS, sandbox_runner


def build_worker(client: Client, settings: WorkerSettings, queue: str | None = None) -> Worker:
    return Worker(
        client,
        task_queue=queue or task_queue(),
        workflows=ALL_WORKFLOWS,
        activities=all_activities(settings, client),
        workflow_runner=sandbox_runner(),
        max_concurrent_activities=200,
        graceful_shutdown_timeout=timedelta(seconds=5),
    )


async def run_worker(state_dir: Path, address: str | None = None, queue: str | None = None) -> None:
    client = await connect(address)
    worker = build_worker(client, WorkerSettings(state_dir=state_dir), queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with worker:
        logging.getLogger("aicd.worker").info("worker running on task queue %s", queue or task_queue())
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default=".aicd", help="where Git clones and command logs live")
    parser.add_argument("--address", default=None, help="Temporal address (default TEMPORAL_ADDRESS)")
    parser.add_argument("--task-queue", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(Path(args.state_dir), args.address, args.task_queue))


if __name__ == "__main__":
    main()
