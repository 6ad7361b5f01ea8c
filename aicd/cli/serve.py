"""`aicd serve` (the HTTP gateway: Git webhooks, Slack, health, metrics) and `aicd watch` (the Git poller
for repositories no webhook reaches). Both reach Temporal through the standard TEMPORAL_* environment;
secrets come from the environment only and are never printed."""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aicd.cli.app import EXIT_USAGE, LogFormatOption, app, connect_explained, fail, setup_logging

# The web stack, Temporal's client and Git load inside the commands: `aicd --help` stays quick.
if TYPE_CHECKING:
    from temporalio.client import Client

    from aicd.dashboard import Dashboard
    from aicd.gateway import Gateway

log = logging.getLogger("aicd.serve")

Specs = Annotated[
    Path, typer.Option("--specs", help="Directory of delivery specs (reloaded when files change).")
]
TaskQueue = Annotated[
    str | None,
    typer.Option("--task-queue", help="Task queue of the workers (default $AICD_TASK_QUEUE or aicd)."),
]
StateDir = Annotated[
    Path, typer.Option("--state-dir", help="Where the poller remembers the heads it has seen.")
]


@app.command()
def serve(
    specs: Specs,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    task_queue: TaskQueue = None,
    poll: Annotated[bool, typer.Option("--poll", help="Also run the Git poller in this process.")] = False,
    state_dir: StateDir = Path(".aicd"),
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    log_format: LogFormatOption = "text",
    with_dashboard: Annotated[
        bool, typer.Option("--dashboard/--no-dashboard", help="Also serve the delivery dashboard at /.")
    ] = True,
) -> None:
    """HTTP gateway: /hooks/github, /hooks/gitlab, /slack/interactions, /slack/commands, /healthz, /metrics,
    and the delivery dashboard at / (settings AICD_DASHBOARD_*; `aicd dashboard` serves it alone)."""
    import asyncio  # not at module level: `aicd --help` stays quick

    from aicd.cli.dashboard import exposure_problem, warn_if_open
    from aicd.dashboard import Dashboard, DashboardSettings, SettingsError
    from aicd.gateway import Gateway, GatewaySettings
    from aicd.gateway.context import (
        GITHUB_SECRET_ENV,
        GITLAB_TOKEN_ENV,
        SLACK_OPERATORS_ENV,
        SLACK_SIGNING_SECRET_ENV,
        SLACK_TOKEN_ENV,
    )

    setup_logging(log_level, log_format)
    try:
        settings = GatewaySettings.from_env(specs, task_queue)
    except ValueError as error:
        raise fail(str(error), EXIT_USAGE) from None
    for value, name, what in (
        (settings.github_secret, GITHUB_SECRET_ENV, "/hooks/github"),
        (settings.gitlab_token, GITLAB_TOKEN_ENV, "/hooks/gitlab"),
        (settings.slack_signing_secret, SLACK_SIGNING_SECRET_ENV, "/slack/*"),
        (settings.slack_bot_token, SLACK_TOKEN_ENV, "Slack message updates"),
    ):
        if not value:
            log.warning("%s is not set: %s refuses every request (or is off)", name, what)
    if settings.slack_signing_secret and not settings.slack_operators:
        log.info(
            "%s is not set: from Slack, only a delivery's approvers may pause, resume and abort it",
            SLACK_OPERATORS_ENV,
        )
    gateway = Gateway(settings)
    board = None
    if with_dashboard:
        try:
            board = Dashboard(DashboardSettings.from_env(), gateway.client)
        except SettingsError as error:
            raise fail(str(error), EXIT_USAGE) from None
        problem = exposure_problem(host, board.settings)
        if problem:
            log.warning("dashboard off: %s", problem)
            board = None
        else:
            warn_if_open(board.settings)
    asyncio.run(_serve(gateway, host, port, log_level, state_dir if poll else None, board))


async def _serve(
    gateway: Gateway,
    host: str,
    port: int,
    log_level: str,
    poll_state: Path | None,
    board: Dashboard | None = None,
) -> None:
    import asyncio  # not at module level: `aicd --help` stays quick

    import uvicorn

    from aicd.cli.dashboard import server_config
    from aicd.gateway import create_app
    from aicd.poller import GitPoller

    server = uvicorn.Server(server_config(create_app(gateway, board), host, port, log_level))
    stop = asyncio.Event()
    poller_task = None
    if poll_state is not None:
        poller = GitPoller(
            gateway.specs,
            gateway.client,
            poll_state / "poller-heads.json",
            queue=gateway.settings.task_queue,
            metrics=gateway.metrics,
        )
        poller_task = asyncio.create_task(poller.run(stop))
    # uvicorn handles SIGINT/SIGTERM with a graceful shutdown, then re-raises the signal for the handler
    # that was there before: make that one a no-op so a clean stop exits 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    try:
        await server.serve()
    finally:
        stop.set()
        if poller_task is not None:
            await poller_task


@app.command()
def watch(
    specs: Specs,
    task_queue: TaskQueue = None,
    state_dir: StateDir = Path(".aicd"),
    once: Annotated[bool, typer.Option("--once", help="Poll every spec once and exit (for cron).")] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    log_format: LogFormatOption = "text",
) -> None:
    """Git poller: lists each spec's source heads every source.pollInterval and starts deliveries for new
    heads of matching branches (the first poll of a repository only records its heads)."""
    import asyncio  # not at module level: `aicd --help` stays quick

    setup_logging(log_level, log_format)
    asyncio.run(_watch(specs, task_queue, state_dir, once))


async def _watch(specs: Path, task_queue: str | None, state_dir: Path, once: bool) -> None:
    import asyncio  # not at module level: `aicd --help` stays quick

    from aicd.gateway.metrics import Metrics
    from aicd.gateway.specs import SpecDirectory
    from aicd.poller import GitPoller

    connected: list[Client] = []

    async def client() -> Client:  # connected on first use, then kept
        if not connected:
            connected.append(await connect_explained())
        return connected[0]

    poller = GitPoller(
        SpecDirectory(specs, Metrics()), client, state_dir / "poller-heads.json", queue=task_queue
    )
    if once:
        for result in await poller.poll_once():
            typer.echo(f"{result.app} {result.branch} {result.revision[:12]}: {result.outcome}")
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    log.info("watching %s (state in %s)", specs, state_dir)
    await poller.run(stop)
