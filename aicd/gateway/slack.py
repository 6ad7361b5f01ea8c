"""Slack interactions (buttons on delivery messages) and the `/aicd` slash command.

Every request is checked against the signing secret over its exact bytes, with a five-minute window on the
signed timestamp. The actor of every action is the Slack user who clicked or typed (their user ID, which is
what specs list as approvers; their username when that is what the spec lists): the gateway never decides
who may approve, the workflow's validators do, and a refusal is shown only to that user, changing nothing.
Buttons are answered at once (Slack wants an answer within 3 s) and acted on right after; a command
that takes longer than that answers "working on it" and posts its outcome when done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from slack_sdk.errors import SlackApiError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.client import Client

from aicd.client import ActionRefused, act_on_app, get_status, list_deliveries, send_action
from aicd.gateway.context import BodyTooLarge, Gateway, error, read_body
from aicd.gateway.signatures import slack_refusal
from aicd.messages import HumanAction
from aicd.plan import DELIVERY_ID
from aicd.slack_blocks import (
    ACTION_IDS,
    APPROVE,
    COMMAND_HELP,
    REJECT,
    ApprovalInfo,
    compact_status,
    delivery_message,
    escape,
    status_line,
    who,
)

log = logging.getLogger("aicd.gateway.slack")
APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,52}$")
COMMAND_DEADLINE_S = 2.5  # then answer "working on it" and post the outcome when it comes
NOT_AN_APPROVER = "is not an approver"


async def _verified_body(gateway: Gateway, request: Request, endpoint: str) -> bytes | Response:
    secret = gateway.settings.slack_signing_secret
    if not secret:
        return _refuse(gateway, endpoint, 503, "Slack signing secret not configured")
    try:
        body = await read_body(request, gateway.settings.max_body_bytes)
    except BodyTooLarge:
        return _refuse(gateway, endpoint, 413, "body too large")
    refusal = slack_refusal(
        secret,
        body,
        request.headers.get("x-slack-request-timestamp"),
        request.headers.get("x-slack-signature"),
    )
    if refusal:
        return _refuse(gateway, endpoint, 401, refusal)
    return body


def _refuse(gateway: Gateway, endpoint: str, status: int, reason: str) -> Response:
    gateway.metrics.inc(
        "aicd_slack_requests_refused_total", endpoint=endpoint, reason=reason.replace(" ", "_")
    )
    log.warning("Slack %s refused (%d): %s", endpoint, status, reason)
    return error(status, reason)


def _form(body: bytes) -> dict[str, str]:
    try:
        return {key: values[0] for key, values in parse_qs(body.decode(), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        return {}


# --- buttons --------------------------------------------------------------------------------------------
async def interactions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    verified = await _verified_body(gateway, request, "interactions")
    if isinstance(verified, Response):
        return verified
    try:
        payload = json.loads(_form(verified)["payload"])
        if not isinstance(payload, dict):
            raise ValueError("payload is not an object")
    except (KeyError, ValueError) as failure:
        return _refuse(gateway, "interactions", 400, f"malformed payload: {failure}")
    if payload.get("type") != "block_actions":
        return Response(status_code=200)  # shortcuts, views: nothing of ours
    try:
        click = _click(payload)
    except (KeyError, TypeError, ValueError) as failure:
        return _refuse(gateway, "interactions", 400, f"malformed action: {failure}")
    if click is None:
        return Response(status_code=200)
    # Answered first, acted on right after (the background task runs once the answer is sent).
    return Response(status_code=200, background=BackgroundTask(_act_on_click, gateway, **click))


def _click(payload: dict[str, Any]) -> dict[str, Any] | None:
    action = payload["actions"][0]
    kind = action["action_id"]
    if kind not in ACTION_IDS:
        return None
    value = json.loads(action["value"])
    delivery, stage = value["delivery"], value.get("stage")
    if not isinstance(delivery, str) or not DELIVERY_ID.fullmatch(delivery):
        raise ValueError("not a delivery ID")
    if stage is not None and not isinstance(stage, str):
        raise ValueError("stage is not a string")
    user = payload["user"]
    container = payload.get("container") or {}
    return {
        "kind": kind,
        "delivery": delivery,
        "stage": stage,
        "user_id": str(user["id"]),
        "username": str(user.get("username") or user.get("name") or ""),
        "channel": str((payload.get("channel") or {}).get("id") or container.get("channel_id") or ""),
        "message_ts": str(container.get("message_ts") or (payload.get("message") or {}).get("ts") or ""),
    }


async def _act_on_click(
    gateway: Gateway,
    kind: str,
    delivery: str,
    stage: str | None,
    user_id: str,
    username: str,
    channel: str,
    message_ts: str,
) -> None:
    try:
        client = await gateway.client()
        outcome = await act_as(client, delivery, kind, stage, user_id, username, f"from Slack by {user_id}")
    except ActionRefused as refused:
        gateway.metrics.inc("aicd_slack_actions_total", kind=kind, via="button", outcome="refused")
        await _ephemeral(gateway, channel, user_id, f":no_entry_sign: Not done: {escape(str(refused))}")
        return
    except Exception as failure:
        gateway.metrics.inc("aicd_slack_actions_total", kind=kind, via="button", outcome="error")
        log.error("Slack %s on %s failed: %s", kind, delivery, failure)
        await _ephemeral(gateway, channel, user_id, f":warning: Could not {kind} {delivery} now; try again.")
        return
    gateway.metrics.inc("aicd_slack_actions_total", kind=kind, via="button", outcome="accepted")
    log.info("Slack: %s %s by %s: %s", kind, delivery, user_id, outcome)
    await _redraw(gateway, client, delivery, channel, message_ts)


async def act_as(
    client: Client, delivery: str, kind: str, stage: str | None, user_id: str, username: str, reason: str
) -> str:
    """Send the action as the Slack user: by user ID first; for approvals, by username when the spec lists
    that instead. The workflow's validator decides; its refusal is raised as ActionRefused."""
    actors = [user_id]
    if kind in (APPROVE, REJECT) and username and username != user_id:
        actors.append(username)
    first: ActionRefused | None = None
    for actor in actors:
        try:
            return await send_action(client, delivery, kind, HumanAction(actor, reason, stage))
        except ActionRefused as refused:
            if NOT_AN_APPROVER not in str(refused):
                raise
            first = first or refused  # the user ID's refusal is the one to show
    assert first is not None
    raise first


async def _redraw(gateway: Gateway, client: Client, delivery: str, channel: str, message_ts: str) -> None:
    """Redraw the message from the delivery's status; its last line says who did what."""
    slack = gateway.slack()
    if slack is None or not channel or not message_ts:
        return
    try:
        status = await get_status(client, delivery)
        text, blocks = delivery_message(
            compact_status(status), _approval(gateway, status.app, status.pending_approval)
        )
        await slack.chat_update(channel=channel, ts=message_ts, text=text, blocks=blocks)
    except (ActionRefused, SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as failure:
        log.warning("cannot update the Slack message of %s: %s", delivery, failure)


def _approval(gateway: Gateway, app: str, stage: str | None) -> ApprovalInfo | None:
    loaded = gateway.specs.by_app(app)
    if loaded is None or stage is None:
        return None
    for candidate in loaded.spec.stages:
        if candidate.name == stage and candidate.approval:
            return ApprovalInfo(list(candidate.approval.approvers), candidate.approval.min_approvals)
    return None


async def _ephemeral(gateway: Gateway, channel: str, user: str, text: str) -> None:
    slack = gateway.slack()
    if slack is None or not channel:
        log.warning("cannot tell %s (no Slack token or channel): %s", user, text)
        return
    try:
        await slack.chat_postEphemeral(channel=channel, user=user, text=text)
    except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as failure:
        log.warning("cannot tell %s in Slack: %s", user, failure)


# --- /aicd ----------------------------------------------------------------------------------------------
async def commands(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    verified = await _verified_body(gateway, request, "commands")
    if isinstance(verified, Response):
        return verified
    form = _form(verified)
    if form.get("ssl_check"):
        return Response(status_code=200)
    user_id = form.get("user_id", "")
    if not user_id:
        return _refuse(gateway, "commands", 400, "malformed command: no user_id")
    words = form.get("text", "").split()
    task = asyncio.ensure_future(run_command(gateway, words, user_id, form.get("user_name", "")))
    try:
        private, text = await asyncio.wait_for(asyncio.shield(task), COMMAND_DEADLINE_S)
    except TimeoutError:
        later = BackgroundTask(_answer_later, gateway, task, form.get("channel_id", ""), user_id)
        return _reply(True, ":hourglass_flowing_sand: Working on it; the outcome follows here.", later)
    return _reply(private, text)


def _reply(private: bool, text: str, background: BackgroundTask | None = None) -> JSONResponse:
    body = {"response_type": "ephemeral" if private else "in_channel", "text": text}
    return JSONResponse(body, background=background)


async def _answer_later(
    gateway: Gateway, task: asyncio.Future[tuple[bool, str]], channel: str, user: str
) -> None:
    try:
        _, text = await task
    except Exception as failure:
        text = f":warning: Failed: {escape(str(failure))}"
    await _ephemeral(gateway, channel, user, text)


async def run_command(gateway: Gateway, words: list[str], user_id: str, username: str) -> tuple[bool, str]:
    """(answer only to the user?, text) for `/aicd WORDS...`."""
    sub = words[0].lower() if words else "help"
    kind = sub if sub in ("status", "pause", "resume", "approve") else "help"
    try:
        private, text = await _command(gateway, sub, words[1:], user_id, username)
    except ActionRefused as refused:
        gateway.metrics.inc("aicd_slack_actions_total", kind=kind, via="command", outcome="refused")
        return True, f":no_entry_sign: Not done: {escape(str(refused))}"
    except Exception as failure:
        gateway.metrics.inc("aicd_slack_actions_total", kind=kind, via="command", outcome="error")
        log.error("/aicd %s failed: %s", sub, failure)
        return True, ":warning: aicd cannot reach its engine right now; try again."
    gateway.metrics.inc("aicd_slack_actions_total", kind=kind, via="command", outcome="ok")
    return private, text


async def _command(
    gateway: Gateway, sub: str, args: list[str], user_id: str, username: str
) -> tuple[bool, str]:
    if sub == "help":
        return True, COMMAND_HELP
    if sub in ("status", "pause", "resume"):
        if not args or not APP_NAME.match(args[0]):
            return True, f"Usage: `/aicd {sub} APP`" + (" `[reason]`" if sub == "pause" else "")
        app = args[0]
        client = await gateway.client()
        if sub == "status":
            return True, await _status_text(client, app)
        reason = " ".join(args[1:]) or f"{sub}d from Slack"
        outcomes = await act_on_app(client, app, sub, HumanAction(user_id, reason))
        if not outcomes:
            return True, f"No running delivery of *{escape(app)}*."
        lines = [f"`{escape(delivery)}`: {escape(outcome)}" for delivery, outcome in outcomes]
        return False, f"{who(user_id)} ran `{sub}` on *{escape(app)}*:\n" + "\n".join(lines)
    if sub == "approve":
        if len(args) != 2 or not DELIVERY_ID.fullmatch(args[0]):
            return True, "Usage: `/aicd approve DELIVERY STAGE`"
        client = await gateway.client()
        outcome = await act_as(client, args[0], APPROVE, args[1], user_id, username, "approved from Slack")
        return False, f"{who(user_id)}: {escape(outcome)} of `{escape(args[0])}`"
    return True, f"Unknown command `{escape(sub)}`.\n{COMMAND_HELP}"


async def _status_text(client: Client, app: str) -> str:
    rows = await list_deliveries(client, app)
    if not rows:
        return f"No deliveries of *{escape(app)}*."
    lines = []
    for delivery, state, phase in rows[:10]:
        if state == "running":
            try:
                lines.append(status_line(compact_status(await get_status(client, delivery))))
                continue
            except ActionRefused:
                pass
        lines.append(f"`{escape(delivery)}` *{escape(phase or state)}*")
    more = f"\n… and {len(rows) - 10} older" if len(rows) > 10 else ""
    return f"Deliveries of *{escape(app)}*:\n" + "\n".join(lines) + more
