"""The worker's HTTP endpoint: `/metrics` for Prometheus, `/healthz` and `/readyz` for probes.

It runs in its own thread, so a scrape or a probe never waits on the worker's event loop - and a blocked
event loop is exactly what `/healthz` must notice: the loop stamps a heartbeat every second and the probe
fails when the stamp is older than `stale_after_s`, or when the worker has stopped polling.

- `/healthz` (liveness): the worker is polling and its event loop is alive. Temporal being unreachable does
  not fail it: a restart would not help, the SDK reconnects by itself.
- `/readyz` (readiness): healthy, and Temporal answered a health check within `stale_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from temporalio.client import Client

HEARTBEAT_EVERY_S = 1.0
TEMPORAL_CHECK_EVERY_S = 10.0
DEFAULT_STALE_AFTER_S = 30.0


@dataclass
class WorkerHealth:
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    polling: bool = False  # the Temporal worker runs (set while `async with worker` holds)
    loop_beat: float = field(default_factory=time.monotonic)
    temporal_ok: float | None = None  # last successful health check of the Temporal frontend

    def live(self) -> tuple[bool, str]:
        if not self.polling:
            return False, "worker not polling"
        age = time.monotonic() - self.loop_beat
        if age > self.stale_after_s:
            return False, f"event loop unresponsive for {age:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        if not live:
            return live, why
        if self.temporal_ok is None or time.monotonic() - self.temporal_ok > self.stale_after_s:
            return False, "Temporal not reachable"
        return True, "ok"

    async def keep_fresh(self, client: Client, stop: asyncio.Event) -> None:
        """Stamp the loop heartbeat every second and check Temporal's health every few seconds."""
        checked = 0.0
        while not stop.is_set():
            self.loop_beat = time.monotonic()
            if self.loop_beat - checked >= TEMPORAL_CHECK_EVERY_S or self.temporal_ok is None:
                checked = self.loop_beat
                try:
                    if await client.service_client.check_health(timeout=timedelta(seconds=5)):
                        self.temporal_ok = time.monotonic()
                except Exception:  # unreachable: readiness goes stale on its own
                    pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=HEARTBEAT_EVERY_S)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
        pass


def make_app(registry: CollectorRegistry, health: WorkerHealth) -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            ok, why = health.live() if path == "/healthz" else health.ready()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")]
            )
            return [f"{why}\n".encode()]
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: /metrics, /healthz, /readyz\n"]

    return app


class MetricsServer:
    """Serves `make_app` on host:port in a daemon thread; `port` is the bound one (0 picks a free port)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: WorkerHealth) -> None:
        self._server = make_server(
            host, port, make_app(registry, health), ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="aicd-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
