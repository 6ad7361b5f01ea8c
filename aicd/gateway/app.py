"""The gateway's Starlette app: routes and spec reloading in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from aicd.gateway.context import Gateway
from aicd.gateway.metrics import CONTENT_TYPE
from aicd.gateway.slack import commands, interactions
from aicd.gateway.webhooks import github_hook, gitlab_hook

if TYPE_CHECKING:
    from aicd.dashboard import Dashboard

log = logging.getLogger("aicd.gateway")


async def healthz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return JSONResponse(
        {
            "status": "ok",
            "specs": sorted(loaded.spec.name for loaded in gateway.specs.specs),
            "spec_errors": len(gateway.specs.errors),
        }
    )


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return PlainTextResponse(gateway.metrics.render(), media_type=CONTENT_TYPE)


async def _reload_forever(gateway: Gateway) -> None:
    while True:
        await asyncio.sleep(gateway.settings.reload_interval_s)
        try:
            await gateway.refresh_specs()
        except Exception:  # a reload bug must not end reloading for good
            log.exception("spec reload failed")


def create_app(gateway: Gateway, dashboard: Dashboard | None = None) -> Starlette:
    """The gateway's routes; with a dashboard, its pages at every other path."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.refresh_specs()
        reloader = asyncio.create_task(_reload_forever(gateway))
        try:
            yield
        finally:
            reloader.cancel()
            if dashboard is not None:
                await dashboard.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/hooks/github", github_hook, methods=["POST"]),
            Route("/hooks/gitlab", gitlab_hook, methods=["POST"]),
            Route("/slack/interactions", interactions, methods=["POST"]),
            Route("/slack/commands", commands, methods=["POST"]),
            *([Mount("", dashboard.app())] if dashboard is not None else []),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
