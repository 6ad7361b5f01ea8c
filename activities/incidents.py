"""Incident hooks: PagerDuty Events API v2 and a generic webhook of CloudEvents, from the worker.

- PagerDuty: a failure, a rollback, an abort or a delivery held too long `trigger`s an alert whose
  `dedup_key` is the delivery's ID (so its later events update one alert); a later successful delivery of
  the app `resolve`s the keys of the app's earlier deliveries and its own (an alert it raised while held
  too long); resolving a key with no open alert is a no-op in PagerDuty. The routing key is read from the
  worker (spec: `routingKey: {env|file}`), never carried in the plan or the history. The endpoint is PagerDuty's, or AICD_PAGERDUTY_EVENTS_URL (a proxy, a stand-in).
- Webhook: the same events as CloudEvents 1.0 in structured JSON mode (`application/cloudevents+json`),
  signed with HMAC-SHA256 over the body (`X-Aicd-Signature-256: sha256=<hex>`, as GitHub signs its
  webhooks) when a secret is configured. The event `id` is stable across retries, so a receiver dedupes.

A refused event (HTTP 4xx but 429) is not retried (typed IncidentRejected); anything else is, by the
workflow's retry policy. Hooks never block or fail a delivery: the workflow sends them in the background.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from aicd.activities.prometheus import ProviderConfigError, read_secret
from aicd.errors import ErrorType
from aicd.governance.model import IncidentPlan
from aicd.messages import DELIVERY_WORKFLOW
from aicd.plan import delivery_id as delivery_prefix

PAGERDUTY_URL_ENV = "AICD_PAGERDUTY_EVENTS_URL"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SIGNATURE_HEADER = "X-Aicd-Signature-256"
HTTP_TIMEOUT_S = 10.0
RESOLVE_LOOKBACK = 20  # the app's earlier deliveries whose alerts a success resolves
_REVISION_PART = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?(-[0-9a-z]+)?")


@dataclass
class IncidentEvent:
    kind: str  # failed | rolled-back | aborted | waiting | succeeded
    delivery_id: str
    app: str
    revision: str
    summary: str
    at: str  # ISO workflow.now()
    stage: str | None = None
    phase: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def resolves(self) -> bool:
        return self.kind == "succeeded"


@dataclass
class IncidentRequest:
    incidents: IncidentPlan
    event: IncidentEvent


def cloud_event(event: IncidentEvent) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{event.delivery_id}/{event.kind}/{event.at}",
        "source": f"aicd/{event.app}",
        "type": f"dev.aicd.delivery.{event.kind}",
        "subject": event.delivery_id,
        "time": event.at,
        "datacontenttype": "application/json",
        "data": {
            "delivery": event.delivery_id,
            "app": event.app,
            "revision": event.revision,
            "stage": event.stage,
            "phase": event.phase,
            "summary": event.summary,
            **event.details,
        },
    }


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _rejected(what: str, response: httpx.Response) -> Exception:
    message = f"{what} answered {response.status_code}: {response.text[:300]}"
    if 400 <= response.status_code < 500 and response.status_code != 429:
        return ApplicationError(message, non_retryable=True, type=ErrorType.INCIDENT_REJECTED)
    return ApplicationError(message, type=ErrorType.INCIDENT_UNAVAILABLE)


class IncidentActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name="send_incident")
    async def send(self, request: IncidentRequest) -> int:
        """Send the event to every configured hook; returns how many HTTP requests were accepted."""
        plan, event = request.incidents, request.event
        sent = 0
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            if plan.pagerduty_key is not None:
                sent += await self._pagerduty(http, plan, event)
            if plan.webhook_url:
                sent += await self._webhook(http, plan, event)
        return sent

    async def _pagerduty(self, http: httpx.AsyncClient, plan: IncidentPlan, event: IncidentEvent) -> int:
        assert plan.pagerduty_key is not None
        try:
            routing_key = read_secret(plan.pagerduty_key, "PagerDuty routing key")
        except ProviderConfigError as error:
            raise ApplicationError(str(error), non_retryable=True, type=ErrorType.INCIDENT_REJECTED) from None
        url = os.environ.get(PAGERDUTY_URL_ENV, PAGERDUTY_EVENTS_URL)
        bodies: list[dict[str, Any]]
        if event.resolves:
            bodies = [
                {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
                # Its own key too: an alert it raised while waiting (waitingTooLong) ends with its success.
                for key in [event.delivery_id, *await self._earlier_deliveries(event)]
            ]
        else:
            bodies = [
                {
                    "routing_key": routing_key,
                    "event_action": "trigger",
                    "dedup_key": event.delivery_id,
                    "payload": {
                        "summary": event.summary[:1024],
                        "source": f"aicd/{event.app}",
                        "severity": plan.severity,
                        "timestamp": event.at,
                        "component": event.app,
                        "group": event.stage or "",
                        "class": f"delivery {event.kind}",
                        "custom_details": {"revision": event.revision, "phase": event.phase, **event.details},
                    },
                    "client": "aicd",
                }
            ]
        for body in bodies:
            try:
                response = await http.post(url, json=body)
            except httpx.HTTPError as error:
                raise ApplicationError(
                    f"PagerDuty unreachable: {error}", type=ErrorType.INCIDENT_UNAVAILABLE
                ) from None
            if response.status_code != 202:
                raise _rejected("PagerDuty", response)
        return len(bodies)

    async def _webhook(self, http: httpx.AsyncClient, plan: IncidentPlan, event: IncidentEvent) -> int:
        assert plan.webhook_url is not None
        body = json.dumps(cloud_event(event), sort_keys=True).encode()
        headers = {"Content-Type": "application/cloudevents+json"}
        if plan.webhook_secret is not None:
            try:
                headers[SIGNATURE_HEADER] = sign(read_secret(plan.webhook_secret, "webhook secret"), body)
            except ProviderConfigError as error:
                raise ApplicationError(
                    str(error), non_retryable=True, type=ErrorType.INCIDENT_REJECTED
                ) from None
        try:
            response = await http.post(plan.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise ApplicationError(
                f"webhook unreachable: {error}", type=ErrorType.INCIDENT_UNAVAILABLE
            ) from None
        if not 200 <= response.status_code < 300:
            raise _rejected("webhook", response)
        return 1

    async def _earlier_deliveries(self, event: IncidentEvent) -> list[str]:
        """The app's closed deliveries started before this one, newest first (their alerts get resolved)."""
        me = await self.client.get_workflow_handle(event.delivery_id).describe()
        prefix = delivery_prefix(event.app, "")
        query = (
            f"WorkflowType = '{DELIVERY_WORKFLOW}' AND ExecutionStatus != 'Running'"
            f" AND WorkflowId STARTS_WITH '{prefix}'"
        )
        earlier = []
        async for execution in self.client.list_workflows(query):
            if execution.id == event.delivery_id or not _REVISION_PART.fullmatch(execution.id[len(prefix) :]):
                continue
            if execution.start_time < me.start_time:
                earlier.append((execution.start_time, execution.id))
        return [delivery for _started, delivery in sorted(earlier, reverse=True)[:RESOLVE_LOOKBACK]]
