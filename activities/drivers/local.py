"""Target kind `local`: the embedded reconciler (aicd.dev.reconciler) runs the committed versions.

Config (the target's spec fields): `path` (values file), optional `reconciler` (its URL; default
$AICD_RECONCILER_URL), `app`, `port` and `keys` ({image, canary, weight} dotted paths), passed along so the
reconciler can take on a target it was not started with.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

import httpx

from aicd.activities.drivers.base import SyncFailed, SyncRequest, SyncResult, config_error
from aicd.targets import LocalTarget

RECONCILER_ENV = "AICD_RECONCILER_URL"


class LocalDriver:
    name: ClassVar[str] = "local"

    def __init__(self, poll_interval: float = 0.5, request_timeout: float = 30.0) -> None:
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout

    @staticmethod
    def reconciler_url(request: SyncRequest) -> str:
        settings = request.typed()
        configured = settings.reconciler if isinstance(settings, LocalTarget) else None
        url = configured or os.environ.get(RECONCILER_ENV)
        if not url:
            raise config_error(
                f"target {request.target} (kind local): no reconciler URL; set `reconciler` on the target "
                f"or {RECONCILER_ENV} (aicd dev / aicd demo set it)"
            )
        return str(url).rstrip("/")

    async def sync(self, request: SyncRequest, heartbeat: Callable[..., None]) -> SyncResult:
        base = self.reconciler_url(request)
        body: dict[str, Any] = {"target": request.target, "revision": request.revision}
        if request.file():
            body["path"] = request.file()
        for key in ("app", "port", "keys"):  # a reconciler's own target options, from tests and tools
            if request.config.get(key) is not None:
                body[key] = request.config[key]
        deadline = time.monotonic() + request.timeout_s
        # Connection errors and 5xx propagate as plain exceptions: Temporal retries the activity.
        async with httpx.AsyncClient(timeout=self.request_timeout, trust_env=False) as client:
            status = await self._post_sync(client, base, body, request)
            while True:
                if status.get("applied") and status.get("healthy"):
                    return SyncResult(
                        target=request.target,
                        revision=request.revision,
                        healthy=True,
                        message=str(status.get("message", "")),
                        details=_details(status),
                    )
                heartbeat(_details(status))
                if time.monotonic() >= deadline:
                    raise SyncFailed(
                        f"target {request.target} not healthy at {request.revision[:12]} after "
                        f"{request.timeout_s:g}s: {status.get('message') or status.get('error') or 'no status'}"
                    )
                await asyncio.sleep(self.poll_interval)
                if status.get("error"):
                    # The revision was not on the branch yet (a mirror lagging behind the push): ask again.
                    status = await self._post_sync(client, base, body, request)
                else:
                    status = await self._get_status(client, base, request)

    async def _post_sync(
        self, client: httpx.AsyncClient, base: str, body: dict[str, Any], request: SyncRequest
    ) -> dict[str, Any]:
        response = await client.post(f"{base}/sync", json=body)
        if response.status_code == 409:  # revision not (yet) on the branch: keep trying until the deadline
            return {"error": _error(response), "healthy": False}
        return self._checked(response, request)

    async def _get_status(self, client: httpx.AsyncClient, base: str, request: SyncRequest) -> dict[str, Any]:
        response = await client.get(f"{base}/targets/{request.target}", params={"revision": request.revision})
        return self._checked(response, request)

    @staticmethod
    def _checked(response: httpx.Response, request: SyncRequest) -> dict[str, Any]:
        if response.status_code in (400, 404):
            # Unknown target or a malformed target config: retrying cannot help.
            raise config_error(
                f"target {request.target} (kind local): reconciler refused: {_error(response)}"
            )
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict):
            raise RuntimeError(f"reconciler answered {data!r}, expected a JSON object")
        return data


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text


def _details(status: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "revision",
        "phase",
        "message",
        "stable",
        "canary",
        "weight",
        "preview",
        "previous",
        "proxy",
        "urls",
        "applied",
        "error",
    )
    return {k: status[k] for k in keys if k in status}
