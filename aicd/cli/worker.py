"""`aicd worker`: the Temporal worker, the same as `python worker.py`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from aicd.cli.app import EXIT_USAGE, LogFormatOption, app, fail, setup_logging, temporal_unreachable

if TYPE_CHECKING:
    from aicd.worker import WorkerRole


@app.command()
def worker(
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", envvar="AICD_STATE_DIR", help="Where Git clones and command logs live."),
    ] = Path(".aicd"),
    address: Annotated[
        str | None, typer.Option("--address", help="Temporal address (default TEMPORAL_ADDRESS).")
    ] = None,
    task_queue: Annotated[
        str | None, typer.Option("--task-queue", help="Task queue (default AICD_TASK_QUEUE or aicd).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar="AICD_METRICS_PORT",
            help="Serve /metrics, /healthz and /readyz on this port (default: off).",
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            "--metrics-host", envvar="AICD_METRICS_HOST", help="Address for --metrics-port (default 0.0.0.0)."
        ),
    ] = None,
    log_format: LogFormatOption = "text",
    role: Annotated[
        str,
        typer.Option(
            "--role",
            envvar="AICD_WORKER_ROLE",
            help="all (workflows, activities and GitOps writes), delivery (all but the writes), or "
            "gitops-writer (the writes only: run one per fleet at a time, so workers never race pushes).",
        ),
    ] = "all",
) -> None:
    """Run aicd's workflows and activities against the Temporal that TEMPORAL_* points at."""
    import asyncio  # not at module level: `aicd --help` stays quick

    from aicd.observability.tracing import TracingConfigError
    from aicd.worker import (  # the worker pulls in every activity; only this command needs them
        WORKER_ROLES,
        observability_from,
        run_worker,
    )

    if role not in WORKER_ROLES:
        raise fail(f"--role must be one of {', '.join(WORKER_ROLES)}, not {role!r}", EXIT_USAGE)
    setup_logging("INFO", log_format)
    try:
        asyncio.run(
            run_worker(
                state_dir,
                address,
                task_queue,
                observability_from(metrics_port, metrics_host),
                cast("WorkerRole", role),
            )
        )
    except TracingConfigError as error:
        raise fail(str(error), EXIT_USAGE) from None
    except RuntimeError as error:
        if "Failed client connect" not in str(error):  # the SDK's words for a Temporal that does not answer
            raise
        from aicd.temporal import DEFAULT_ADDRESS

        raise temporal_unreachable(
            address or os.environ.get("TEMPORAL_ADDRESS") or DEFAULT_ADDRESS, error
        ) from None
