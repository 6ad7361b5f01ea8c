"""The demo app's HTTP surface: `/` (the traffic), `/health`, `/metrics`."""

from __future__ import annotations

import asyncio
import random
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aicd.dev.demo_app import AppConfig
from aicd.dev.demo_app import metrics as m


def create_app(
    config: AppConfig,
    *,
    version: str,
    track: str,
    app_name: str = "demo",
    rng: random.Random | None = None,
) -> Starlette:
    labels = {"app": app_name, "track": track, "version": version}
    requests_total = m.Counter("http_requests_total", "HTTP requests served, by status code.", labels)
    duration = m.Histogram("http_request_duration_seconds", "Time to serve an HTTP request.", labels)
    # Both codes exist from the start: an error-rate query over a healthy version then reads 0 instead of
    # "no data", which an analysis would otherwise have to special-case.
    for code in ("200", "500"):
        requests_total.inc({"code": code}, 0.0)
    draw = rng or random.Random()
    identity = {"X-App": app_name, "X-Version": config.claims_version or version, "X-Track": track}

    async def serve(request: Request) -> Response:
        started = time.perf_counter()
        if config.added_latency_ms:
            await asyncio.sleep(config.added_latency_ms / 1000.0)
        failed = config.error_ratio > 0 and draw.random() < config.error_ratio
        code = 500 if failed else 200
        body = {"app": app_name, "version": identity["X-Version"], "track": track, "ok": not failed}
        requests_total.inc({"code": str(code)})
        duration.observe(time.perf_counter() - started)
        return JSONResponse(body, status_code=code, headers=identity)

    async def health(request: Request) -> Response:
        if config.unhealthy:
            return JSONResponse(
                {"status": "unhealthy", "version": version}, status_code=503, headers=identity
            )
        return JSONResponse({"status": "ok", "version": version}, headers=identity)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(m.render(requests_total, duration), media_type=m.CONTENT_TYPE)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]
    return Starlette(
        routes=[
            Route("/health", health),
            Route("/metrics", metrics),
            Route("/", serve, methods=methods),
            Route("/{path:path}", serve, methods=methods),
        ]
    )
