"""Slack notifications: one channel message per delivery, updated in place, with a thread reply per event
and an alert (a reply also shown in the channel) on failure or rollback.

Where the message is: the first call posts it and returns its channel ID and `ts`; the workflow keeps them
in its state and passes them on every later call. Workflow state survives worker restarts and moves
between workers (it is rebuilt from history), unlike a file on one worker's disk. Calls for one delivery
are made one at a time by the workflow, so no two calls race to post the first message.

Slack being down must never hold up a delivery: errors Slack may recover from (5xx, rate limits, network)
raise so Temporal retries with the workflow's retry policy; answers that retrying cannot change (bad
channel, revoked token, ...) end the call quietly with an outcome that says why.
Token: env SLACK_BOT_TOKEN; API base URL: env SLACK_API_URL (default Slack's). Neither ever enters
workflow inputs or history.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from aicd.errors import ErrorType
from aicd.slack_blocks import ApprovalInfo, delivery_message, event_reply

TOKEN_ENV = "SLACK_BOT_TOKEN"
API_URL_ENV = "SLACK_API_URL"
DEFAULT_API_URL = "https://slack.com/api/"
METADATA_EVENT = "aicd_delivery"
HTTP_TIMEOUT_S = 10

# Slack answers that no retry can fix: give up on this call at once.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "no_permission",
        "invalid_blocks",
        "invalid_arguments",
        "msg_too_long",
        "restricted_action",
    }
)
log = logging.getLogger("aicd.notify")


@dataclass
class NotifyEvent:
    kind: str  # started | stage | approval | step | paused | resumed | rolled-back | finished
    detail: str = ""
    target: str | None = None


@dataclass
class SlackMessage:
    channel: str  # the channel ID Slack answered with (chat.update wants the ID, not "#name")
    ts: str


@dataclass
class NotifyRequest:
    channel: str  # from the spec: "#deploys" or a channel ID
    status: dict[str, Any]  # aicd.slack_blocks.compact_status(...)
    events: list[NotifyEvent] = field(default_factory=list)
    message: SlackMessage | None = None  # the delivery's message, once posted
    approval: ApprovalInfo | None = None  # the pending stage's approvers


@dataclass
class NotifyResult:
    message: SlackMessage | None
    outcome: str  # posted | updated | skipped: ... | gave up: ...


def slack_client(token: str, base_url: str | None = None) -> AsyncWebClient:
    url = base_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    return AsyncWebClient(token=token, base_url=url, timeout=HTTP_TIMEOUT_S)


@activity.defn(name="notify")
async def notify(request: NotifyRequest) -> NotifyResult:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return NotifyResult(request.message, "skipped: no SLACK_BOT_TOKEN")
    try:
        return await Notifier(slack_client(token), request).run()
    except SlackApiError as error:
        code = _error_code(error)
        status = getattr(error.response, "status_code", 0)
        if code in PERMANENT_ERRORS or (400 <= status < 500 and status != 429 and code):
            log.warning(
                "Slack refused the notification of %s: %s", request.status.get("delivery_id"), code or status
            )
            return NotifyResult(request.message, f"gave up: {code or status}")
        raise _retryable(error) from None
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ApplicationError(
            f"Slack unreachable: {type(error).__name__}: {error}", type=ErrorType.SLACK_UNAVAILABLE
        ) from None


class Notifier:
    def __init__(self, client: AsyncWebClient, request: NotifyRequest) -> None:
        self.client = client
        self.request = request
        self.delivery_id = str(request.status["delivery_id"])

    async def run(self) -> NotifyResult:
        request = self.request
        text, blocks = delivery_message(request.status, request.approval)
        message = request.message
        outcome = "updated"
        if message is not None:
            try:
                await self.client.chat_update(
                    channel=message.channel, ts=message.ts, text=text, blocks=blocks
                )
            except SlackApiError as error:
                if _error_code(error) != "message_not_found":
                    raise
                message = None  # someone deleted it: post a new one rather than stay silent
        if message is None:
            message = await self._find_posted() if activity.info().attempt > 1 else None
            if message is None:
                message = await self._post(text, blocks)
                outcome = "posted"
            else:
                await self.client.chat_update(
                    channel=message.channel, ts=message.ts, text=text, blocks=blocks
                )
        # A retry skips the replies an earlier attempt already posted (progress is kept in heartbeat details).
        details = activity.info().heartbeat_details
        done = int(details[0]) if details else 0
        replies = [reply for event in request.events if (reply := self._reply(event)) is not None]
        for index, (reply_text, alert) in enumerate(replies):
            if index < done:
                continue
            await self.client.chat_postMessage(
                channel=message.channel, thread_ts=message.ts, text=reply_text, reply_broadcast=alert
            )
            activity.heartbeat(index + 1)
        return NotifyResult(message, outcome)

    def _reply(self, event: NotifyEvent) -> tuple[str, bool] | None:
        return event_reply(event.kind, event.detail, self.request.status, self.request.approval)

    async def _post(self, text: str, blocks: list[dict[str, Any]]) -> SlackMessage:
        response = await self.client.chat_postMessage(
            channel=self.request.channel,
            text=text,
            blocks=blocks,
            metadata={"event_type": METADATA_EVENT, "event_payload": {"delivery_id": self.delivery_id}},
        )
        return SlackMessage(str(response["channel"]), str(response["ts"]))

    async def _find_posted(self) -> SlackMessage | None:
        """After a failed attempt the message may have been posted before the failure (the answer was
        lost): look for it by its metadata so a retry does not post a second one. Best effort: without
        the history scope, post anew."""
        try:
            response = await self.client.conversations_history(
                channel=self.request.channel, limit=50, include_all_metadata=True
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as error:
            log.info(
                "cannot search %s for the message of %s: %s", self.request.channel, self.delivery_id, error
            )
            return None
        for item in response.get("messages") or []:
            metadata = item.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if (
                metadata.get("event_type") == METADATA_EVENT
                and payload.get("delivery_id") == self.delivery_id
            ):
                return SlackMessage(str(response.get("channel") or self.request.channel), str(item["ts"]))
        return None


def _error_code(error: SlackApiError) -> str:
    data = getattr(error.response, "data", None)
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _retryable(error: SlackApiError) -> ApplicationError:
    """5xx, rate limits and odd answers: Temporal retries (after Retry-After when Slack says so)."""
    status = getattr(error.response, "status_code", 0)
    code = _error_code(error)
    delay = None
    if status == 429:
        retry_after = (getattr(error.response, "headers", None) or {}).get("Retry-After")
        if retry_after and str(retry_after).isdigit():
            delay = timedelta(seconds=int(retry_after))
    return ApplicationError(
        f"Slack answered {status} {code}".strip(), type=ErrorType.SLACK_UNAVAILABLE, next_retry_delay=delay
    )
