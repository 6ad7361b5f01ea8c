"""The per-target traffic-splitting HTTP proxy, and running small ASGI servers inside an existing loop.

The proxy plays the part of a service mesh / Argo Rollouts traffic router: every request goes to the
upstream that `pick()` returns (the reconciler draws stable or canary at random, by the committed weight).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

# RFC 9110 hop-by-hop headers, plus the framing headers the proxy recomputes itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# httpx hands us the decoded body, so the upstream's content-encoding no longer applies.
_DROP_FROM_RESPONSE = _HOP_BY_HOP | {"content-encoding"}
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_proxy_app(target: str, pick: Callable[[], str | None], client: httpx.AsyncClient) -> Starlette:
    """An ASGI app forwarding each request to the base URL `pick()` returns at that moment (None: 503)."""

    async def forward(request: Request) -> Response:
        upstream = pick()
        if upstream is None:
            return JSONResponse({"error": f"target {target}: no running version to send traffic to"}, 503)
        url = upstream + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        if request.client is not None:
            headers.append(("x-forwarded-for", request.client.host))
        try:
            upstream_response = await client.request(
                request.method, url, content=await request.body(), headers=headers
            )
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"target {target}: upstream {upstream} failed: {exc!r}"}, 502)
        response = Response(content=upstream_response.content, status_code=upstream_response.status_code)
        response.raw_headers.extend(
            (k, v)
            for k, v in upstream_response.headers.raw
            if k.decode("latin-1").lower() not in _DROP_FROM_RESPONSE
        )
        return response

    return Starlette(routes=[Route("/{path:path}", forward, methods=_METHODS)])


@dataclass
class RunningServer:
    """A uvicorn server serving on an already bound socket inside the current event loop."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_server(app: ASGIApp, sock: socket.socket, name: str) -> RunningServer:
    """Serve `app` on `sock` in the running loop; returns once it accepts connections."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_config=None,  # leave the host process's logging configuration alone
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name=name)
    while not server.started:
        if task.done():
            task.result()  # surfaces the startup error
            raise RuntimeError(f"{name}: server exited during startup")
        await asyncio.sleep(0.01)
    return RunningServer(server=server, task=task, port=int(port))
