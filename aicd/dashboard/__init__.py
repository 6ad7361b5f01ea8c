"""The delivery dashboard: every delivery, its stages, waves and targets, the canary weights over time, the
judge's verdicts as charts, the commits and the action log, followed live in a browser, with pause, resume,
abort, approve and reject for signed-in people.

Served by `aicd serve` (beside the webhooks), `aicd dashboard` (alone) and the embedded stack (`aicd dev`,
`aicd demo`). It reads Temporal only - visibility for the list, the status query for a delivery, and the
workflow histories (cached per run) for everything over time - plus the GitOps repository for the diffs; it
changes nothing but through aicd.client's human actions, which the workflows' validators check.

Modules: `settings` (environment), `auth` (identity, sessions, CSRF, who may act), `history` (reading and
digesting histories), `views` (what the pages show) and `charts` (their geometry), `gitops` (commits and
diffs), `live` (the shared pollers behind server-sent events), `service` (the data), `app` (the routes),
`embedded` (the dashboard process of `aicd dev` / `aicd demo`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from temporalio.client import Client

from aicd.dashboard.app import Dashboard
from aicd.dashboard.settings import DashboardSettings, SettingsError

__all__ = ["Dashboard", "DashboardSettings", "SettingsError", "standalone_app"]


def standalone_app(settings: DashboardSettings, client: Callable[[], Awaitable[Client]]) -> Starlette:
    """The dashboard alone (`aicd dashboard`): its pages at the root, `/healthz` for readiness checks."""
    dashboard = Dashboard(settings, client)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dashboard.close()

    return Starlette(
        routes=[Route("/healthz", healthz, methods=["GET"]), Mount("", dashboard.app())], lifespan=lifespan
    )
