"""The demo app's HTTP surface: `/` (the traffic), `/health`, `/metrics`."""

from __future__ import annotations

import asyncio
import math
import random
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aicd.dev.demo_app import AppConfig
from aicd.dev.demo_app import metrics as m

# The simulated service time of a request to "/": lognormal, its median and the sd of its log. Its 90th
# percentile (about 19 ms) lies inside the (10 ms, 25 ms] bucket, where histogram_quantile interpolates.
SERVICE_MEDIAN_S = 0.015
SERVICE_SPREAD = 0.2


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
        # A service's own time, spread as real ones are: a handler that answers in well under the
        # histogram's first bucket (5 ms) gives every quantile the same interpolated value on both tracks,
        # which shows nothing (the judge calls it unjudgeable), not a latency the canary matches.
        service_s = draw.lognormvariate(math.log(SERVICE_MEDIAN_S), SERVICE_SPREAD)
        await asyncio.sleep(service_s + config.added_latency_ms / 1000.0)
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
