"""Loopback stand-ins for the incident hooks: PagerDuty's Events API v2 and a CloudEvents webhook receiver.

PagerDuty (`POST /v2/enqueue`) checks the request shape the public API documents and answers as it does:
JSON body; `routing_key` a 32-character string; `event_action` trigger | acknowledge | resolve; `dedup_key`
at most 255 characters, required for acknowledge and resolve; for trigger a `payload` with `summary`
(1..1024 characters), `source` and `severity` (critical | error | warning | info), an ISO 8601 `timestamp`
if given, and `custom_details` an object if given. Accepted: 202 `{status: success, message: Event processed,
dedup_key}` (a trigger without a key gets one); refused: 400 `{status: invalid event, message, errors}`.
Open alerts are tracked by dedup_key (trigger opens, resolve closes).

The webhook (`POST /hook`) wants `application/cloudevents+json` with the CloudEvents 1.0 required attributes
(specversion 1.0, id, source, type) and, when it knows a secret, a valid `X-Aicd-Signature-256` HMAC.
The audit sink (`POST /audit`) wants a CloudEvents JSON batch (`application/cloudevents-batch+json`, an
array of events with the required attributes) and keeps each batch's events.
`fail_next(n)` answers the next n requests of either with 500 (the service briefly down)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aicd.dev.ports import bind_socket
from aicd.dev.proxy import RunningServer, start_server
from aicd.testing.polling import poll_until

SEVERITIES = {"critical", "error", "warning", "info"}
ACTIONS = {"trigger", "acknowledge", "resolve"}


@dataclass
class IncidentStandin:
    webhook_secret: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # accepted PagerDuty events
    cloud_events: list[dict[str, Any]] = field(default_factory=list)  # accepted webhook events
    audit_batches: list[list[dict[str, Any]]] = field(default_factory=list)  # accepted audit batches
    refused: list[tuple[str, list[str]]] = field(default_factory=list)  # (endpoint, errors)
    open_alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures_left: int = 0
    audit_delay_s: float = 0.0  # a slow audit sink: each batch is answered this late
    port: int = 0
    _server: RunningServer | None = None

    @property
    def pagerduty_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/enqueue"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def audit_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/audit"

    async def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/v2/enqueue", self._pagerduty, methods=["POST"]),
                Route("/hook", self._webhook, methods=["POST"]),
                Route("/audit", self._audit, methods=["POST"]),
            ]
        )
        self._server = await start_server(app, bind_socket(port=self.port), "incident stand-in")
        self.port = self._server.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()

    def fail_next(self, count: int) -> None:
        self.failures_left = count

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        return await poll_until(
            predicate, timeout, lambda: f"the stand-in saw events {self.events}, refused {self.refused}"
        )

    def _failing(self) -> bool:
        if self.failures_left > 0:
            self.failures_left -= 1
            return True
        return False

    async def _pagerduty(self, request: Request) -> Response:
        if self._failing():
            return JSONResponse({"status": "error", "message": "internal"}, status_code=500)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._refuse("pagerduty", ["body is not JSON"])
        errors = pagerduty_errors(body)
        if errors:
            return self._refuse("pagerduty", errors)
        key = body.get("dedup_key") or f"standin-{len(self.events) + 1}"
        self.events.append(body)
        if body["event_action"] == "trigger":
            self.open_alerts[key] = body
        elif body["event_action"] == "resolve":
            self.open_alerts.pop(key, None)
        return JSONResponse(
            {"status": "success", "message": "Event processed", "dedup_key": key}, status_code=202
        )

    def _refuse(self, endpoint: str, errors: list[str]) -> Response:
        self.refused.append((endpoint, errors))
        return JSONResponse(
            {"status": "invalid event", "message": "Event object is invalid", "errors": errors}, 400
        )

    async def _webhook(self, request: Request) -> Response:
        if self._failing():
            return Response(status_code=500)
        raw = await request.body()
        errors = []
        if request.headers.get("content-type", "").split(";")[0] != "application/cloudevents+json":
            errors.append("Content-Type must be application/cloudevents+json")
        if self.webhook_secret is not None:
            expected = "sha256=" + hmac.new(self.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(request.headers.get("x-aicd-signature-256", ""), expected):
                errors.append("bad or missing X-Aicd-Signature-256")
        try:
            event = json.loads(raw)
        except ValueError:
            event = {}
            errors.append("body is not JSON")
        if event.get("specversion") != "1.0":
            errors.append("specversion must be 1.0")
        errors += [f"{name} is required" for name in ("id", "source", "type") if not event.get(name)]
        if errors:
            self.refused.append(("webhook", errors))
            return JSONResponse({"errors": errors}, status_code=400)
        self.cloud_events.append(event)
        return Response(status_code=204)

    async def _audit(self, request: Request) -> Response:
        if self.audit_delay_s:
            await asyncio.sleep(self.audit_delay_s)
        if self._failing():
            return Response(status_code=503)
        errors = []
        if request.headers.get("content-type", "").split(";")[0] != "application/cloudevents-batch+json":
            errors.append("Content-Type must be application/cloudevents-batch+json")
        try:
            batch = json.loads(await request.body())
        except ValueError:
            batch = None
        if not isinstance(batch, list):
            errors.append("a batch is a JSON array of events")
            batch = []
        for index, event in enumerate(batch):
            if not isinstance(event, dict) or event.get("specversion") != "1.0":
                errors.append(f"event {index}: specversion must be 1.0")
                continue
            errors += [
                f"event {index}: {name} is required"
                for name in ("id", "source", "type")
                if not event.get(name)
            ]
        if errors:
            self.refused.append(("audit", errors))
            return JSONResponse({"errors": errors}, status_code=400)
        self.audit_batches.append(batch)
        return Response(status_code=202)


def pagerduty_errors(body: Any) -> list[str]:
    """What PagerDuty's Events API v2 would refuse in `body` (empty: valid)."""
    if not isinstance(body, dict):
        return ["the event must be a JSON object"]
    errors = []
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("routing_key must be a 32-character string")
    action = body.get("event_action")
    if action not in ACTIONS:
        errors.append(f"event_action must be one of {sorted(ACTIONS)}")
    dedup = body.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        errors.append("dedup_key must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append(f"dedup_key is required for {action}")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "payload is required for trigger"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
            errors.append("payload.summary must be 1 to 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            errors.append("payload.source is required")
        if payload.get("severity") not in SEVERITIES:
            errors.append(f"payload.severity must be one of {sorted(SEVERITIES)}")
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(str(payload["timestamp"]))
            except ValueError:
                errors.append("payload.timestamp must be ISO 8601")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            errors.append("payload.custom_details must be an object")
    return errors
