"""`aicd worker`: the Temporal worker, the same as `python worker.py`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from aicd.cli.app import app
from aicd.redact import configure_logging


@app.command()
def worker(
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Where Git clones and command logs live.")
    ] = Path(".aicd"),
    address: Annotated[
        str | None, typer.Option("--address", help="Temporal address (default TEMPORAL_ADDRESS).")
    ] = None,
    task_queue: Annotated[
        str | None, typer.Option("--task-queue", help="Task queue (default AICD_TASK_QUEUE or aicd).")
    ] = None,
) -> None:
    """Run every aicd workflow and activity against the Temporal that TEMPORAL_* points at."""
    from aicd.worker import run_worker  # the worker pulls in every activity; only this command needs them

    configure_logging(logging.INFO)
    asyncio.run(run_worker(state_dir, address, task_queue))
