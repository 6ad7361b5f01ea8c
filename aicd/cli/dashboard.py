"""`aicd dashboard`: the delivery dashboard alone (no webhooks, no Slack, no spec directory); `aicd serve`
serves the same pages beside the gateway. Temporal from the standard TEMPORAL_* environment, the
dashboard's settings from AICD_DASHBOARD_* (see aicd.dashboard.settings)."""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aicd.cli.app import EXIT_USAGE, LogFormatOption, app, connect_explained, fail, setup_logging
from aicd.network import is_loopback

if TYPE_CHECKING:
    import uvicorn
    from temporalio.client import Client

    from aicd.dashboard import DashboardSettings

log = logging.getLogger("aicd.dashboard")


@app.command()
def dashboard(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8090,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    log_format: LogFormatOption = "text",
    fd: Annotated[
        int | None,
        typer.Option("--fd", hidden=True, help="Serve on this inherited, already bound socket."),
    ] = None,
) -> None:
    """Web dashboard alone: deliveries, their waves, weights and verdicts, followed live; pause, resume,
    abort, approve and reject for signed-in users (AICD_DASHBOARD_TOKENS_FILE or an authenticating proxy)."""
    import asyncio  # not at module level: `aicd --help` stays quick

    # Imported here: the other commands need neither Temporal's client nor the dashboard at start-up.
    from aicd.dashboard import DashboardSettings, SettingsError, standalone_app

    setup_logging(log_level, log_format)
    try:
        settings = DashboardSettings.from_env()
    except SettingsError as error:
        raise fail(str(error), EXIT_USAGE) from None
    problem = exposure_problem(host, settings)
    if problem:
        raise fail(problem, EXIT_USAGE)
    warn_if_open(settings)
    connected: list[Client] = []

    async def client() -> Client:  # connected on first use, then kept
        if not connected:
            connected.append(await connect_explained())
        return connected[0]

    asyncio.run(run_server(standalone_app(settings, client), host, port, log_level, fd=fd))


def exposure_problem(host: str, settings: DashboardSettings) -> str | None:
    """Why the dashboard must not be served on `host` as set up: beyond this machine, with nobody able to
    sign in, every delivery would be readable by anyone unless that was asked for (AICD_DASHBOARD_READ)."""
    from aicd.dashboard.settings import READ_ENV, TOKENS_FILE_ENV, TRUSTED_PROXIES_ENV

    if settings.sign_in or is_loopback(host) or os.environ.get(READ_ENV):
        return None
    return (
        f"the dashboard on {host} would show every delivery to anyone who reaches it: set {TOKENS_FILE_ENV}"
        f" or {TRUSTED_PROXIES_ENV} so people sign in, or {READ_ENV}=anyone to serve it read-only to everyone"
    )


def warn_if_open(settings: DashboardSettings) -> None:
    if not settings.sign_in:
        log.warning(
            "dashboard: no sign-in is set up (AICD_DASHBOARD_TOKENS_FILE, AICD_DASHBOARD_TRUSTED_PROXIES):"
            " it is read only"
        )
    if not settings.read_signed_in:
        log.warning(
            "dashboard: anyone who reaches it can read every delivery (AICD_DASHBOARD_READ=signed-in)"
        )


def server_config(asgi: Any, host: str, port: int, log_level: str) -> uvicorn.Config:
    """uvicorn's settings for aicd's HTTP servers. proxy_headers off: whether a proxy's identity header is
    believed is decided on the real peer address, never on an X-Forwarded-For a client wrote. A short
    graceful shutdown: open live pages (server-sent events) never end by themselves. log_config=None:
    uvicorn's lines go through the root handler, so they are redacted like ours."""
    import uvicorn

    return uvicorn.Config(
        asgi,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=3,
    )


async def run_server(asgi: Any, host: str, port: int, log_level: str, *, fd: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM; `fd`: an inherited socket the parent bound (`aicd dev` does, so nobody
    takes the port between its check and our bind)."""
    import socket

    import uvicorn

    server = uvicorn.Server(server_config(asgi, host, port, log_level))
    # uvicorn handles SIGINT/SIGTERM with a graceful shutdown, then re-raises the signal for the handler
    # that was there before: make that one a no-op so a clean stop exits 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    await server.serve(sockets=None if fd is None else [socket.socket(fileno=fd)])
