"""Slack interactions (buttons on delivery messages) and the `/aicd` slash command.

Every request is checked against the signing secret over its exact bytes, with a five-minute window on the
signed timestamp and a memory of the requests accepted (a request is acted on once), then its shape (a signed payload of the wrong shape is a 400 with a one-line reason, never
a crash). The actor of every action is the Slack user ID of who clicked or typed, and nothing else: a
username or display name is chosen by its owner and never stands in for an identity. The gateway never
decides who may approve, the workflow's validators do. Pause, resume and abort the workflow accepts from
anyone, and anyone in the workspace can type `/aicd` in any channel or DM (or click in a Slack Connect
shared channel), so the gateway decides those by the rule the dashboard applies (aicd.steering): the
delivery's approvers (any stage, from the plan it was started with) and AICD_SLACK_OPERATORS. A refusal,
the gateway's or the workflow's, is shown only to that user, and nothing is sent to the delivery. Buttons
are answered at once (Slack wants an answer within 3 s) and acted on right after; a command that takes
longer than that answers "working on it" and posts its outcome when done.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from slack_sdk.errors import SlackApiError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.client import Client

from aicd.client import (
    ActionRefused,
    act_on_app,
    delivery_plan,
    get_status,
    list_deliveries,
    send_action,
)
from aicd.gates.base import OVERRIDE_KINDS
from aicd.gateway.context import (
    SLACK_MAX_BODY_BYTES,
    SLACK_TEAMS_ENV,
    BodyTooLarge,
    Gateway,
    PayloadInvalid,
    error,
    parse_json_object,
    read_body,
)
from aicd.gateway.metrics import reason_label
from aicd.gateway.signatures import slack_refusal
from aicd.messages import HumanAction
from aicd.people import Roster
from aicd.plan import DELIVERY_ID
from aicd.slack_blocks import (
    ACTION_IDS,
    APPROVE,
    COMMAND_HELP,
    SLACK_ID,
    ApprovalInfo,
    compact_status,
    delivery_message,
    escape,
    status_line,
    who,
)
from aicd.steering import STEERING, may_steer, plan_approvers

log = logging.getLogger("aicd.gateway.slack")
APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,52}")
STAGE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
COMMAND_DEADLINE_S = 2.5  # then answer "working on it" and post the outcome when it comes


async def _verified_body(gateway: Gateway, request: Request, endpoint: str) -> bytes | Response:
    secret = gateway.settings.slack_signing_secret
    if not secret:
        return _refuse(gateway, endpoint, 503, "Slack signing secret not configured")
    try:
        body = await read_body(request, min(gateway.settings.max_body_bytes, SLACK_MAX_BODY_BYTES))
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
    # The signature covers the timestamp and the body, and Slack sends each click or command once: a second
    # request with it is a replay inside the five-minute window (someone's old Resume, sent again).
    if not gateway.replays.first_time(f"slack:{request.headers['x-slack-signature']}"):
        return _refuse(gateway, endpoint, 401, "replayed request")
    return body


def _refuse(gateway: Gateway, endpoint: str, status: int, reason: str) -> Response:
    gateway.metrics.inc("aicd_slack_requests_refused_total", endpoint=endpoint, reason=reason_label(reason))
    log.warning("Slack %s refused (%d): %s", endpoint, status, reason)
    return error(status, reason)


def _other_workspace(gateway: Gateway, team: str | None, enterprise: str | None) -> str | None:
    """Why a signed request from another Slack workspace is not acted on (AICD_SLACK_TEAMS), or None."""
    allowed = gateway.settings.slack_teams
    if not allowed or team in allowed or enterprise in allowed:
        return None
    return f"other workspace: {str(team)[:20]!r} is not in {SLACK_TEAMS_ENV}"


def _form(body: bytes) -> dict[str, str]:
    try:
        return {key: values[0] for key, values in parse_qs(body.decode(), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        return {}


def _field(payload: dict[str, Any], path: str, kind: type, *, required: bool = True) -> Any:
    """The value at a dotted `path` of a Slack payload, of type `kind`; PayloadInvalid names what is wrong."""
    value: Any = payload
    walked: list[str] = []
    for key in path.split("."):
        if not isinstance(value, dict):
            raise PayloadInvalid(f"{'.'.join(walked)} is not an object")
        walked.append(key)
        value = value.get(key)
        if value is None:
            break
    if value is None:
        if required:
            raise PayloadInvalid(f"{path} is missing")
        return None
    if not isinstance(value, kind):
        raise PayloadInvalid(f"{path} is not {'a string' if kind is str else 'an object'}")
    return value


def _user_id(value: str, where: str) -> str:
    if not SLACK_ID.fullmatch(value):
        raise PayloadInvalid(f"{where} {value[:40]!r} is not a Slack user ID")
    return value


# --- buttons --------------------------------------------------------------------------------------------
@dataclass
class Click:
    kind: str
    delivery: str
    stage: str | None
    user_id: str
    channel: str
    message_ts: str
    request_id: str


async def interactions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    verified = await _verified_body(gateway, request, "interactions")
    if isinstance(verified, Response):
        return verified
    try:
        payload = parse_json_object(_form(verified).get("payload", ""), "payload")
    except PayloadInvalid as invalid:
        return _refuse(gateway, "interactions", 400, str(invalid))
    if payload.get("type") != "block_actions":
        return Response(status_code=200)  # shortcuts, views: nothing of ours
    try:  # `team` is null for an org-wide app on Enterprise Grid: the user's workspace then
        user_team = _field(payload, "user.team_id", str, required=False)
        team = _field(payload, "team.id", str, required=False) or user_team
        enterprise = _field(payload, "enterprise.id", str, required=False)
    except PayloadInvalid as invalid:
        return _refuse(gateway, "interactions", 400, f"malformed payload: {invalid}")
    # Both the workspace clicked in and the clicker's own: an external member of a shared channel (Slack
    # Connect) clicks in an allowed workspace but belongs to another.
    elsewhere = _other_workspace(gateway, team, enterprise) or (
        _other_workspace(gateway, user_team, enterprise) if user_team else None
    )
    if elsewhere:
        return _refuse(gateway, "interactions", 403, elsewhere)
    try:
        click = _click(payload, slack_request_id(request))
    except PayloadInvalid as invalid:
        return _refuse(gateway, "interactions", 400, f"malformed action: {invalid}")
    if click is None:
        return Response(status_code=200)
    # Answered first, acted on right after (the background task runs once the answer is sent).
    return Response(status_code=200, background=BackgroundTask(_act_on_click, gateway, **asdict(click)))


def slack_request_id(request: Request) -> str:
    """The ID of the workflow updates a signed Slack request makes: Slack signs each click or command once, so
    a copy of the request (a replay inside the five-minute window, to this replica or another) names the same
    updates, which the server runs once. A digest: the signature itself stays out of workflow histories."""
    signature = request.headers["x-slack-signature"].encode()
    return "slack-" + hashlib.sha256(signature).hexdigest()[:40]


def _click(payload: dict[str, Any], request_id: str) -> Click | None:
    """The button click of a signed `block_actions` payload, checked field by field; None for buttons that are
    not ours."""
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise PayloadInvalid("actions is not a non-empty list of objects")
    action = actions[0]
    kind = _field(action, "action_id", str)
    if kind not in ACTION_IDS:
        return None
    value = parse_json_object(_field(action, "value", str), "actions[0].value")
    delivery = _field(value, "delivery", str)
    if not DELIVERY_ID.fullmatch(delivery):
        raise PayloadInvalid("actions[0].value.delivery is not a delivery ID")
    stage = _field(value, "stage", str, required=False)
    if stage is not None and not STAGE_NAME.fullmatch(stage):
        raise PayloadInvalid("actions[0].value.stage is not a stage name")
    user_id = _user_id(_field(payload, "user.id", str), "user.id")
    channel = _field(payload, "channel.id", str, required=False) or _field(
        payload, "container.channel_id", str, required=False
    )
    message_ts = _field(payload, "container.message_ts", str, required=False) or _field(
        payload, "message.ts", str, required=False
    )
    return Click(kind, delivery, stage, user_id, channel or "", message_ts or "", request_id)


async def _act_on_click(
    gateway: Gateway,
    kind: str,
    delivery: str,
    stage: str | None,
    user_id: str,
    channel: str,
    message_ts: str,
    request_id: str,
) -> None:
    try:
        client = await gateway.client()
        refusal = await steering_refusal(gateway, client, delivery, kind, user_id)
        if refusal is not None:
            log.info("Slack: %s %s by %s refused: %s", kind, delivery, user_id, refusal)
            raise ActionRefused(refusal)
        action = HumanAction(user_id, f"from Slack by {user_id}", stage, via="slack")
        outcome = await send_action(client, delivery, kind, action, request_id=request_id)
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


async def steering_refusal(
    gateway: Gateway, client: Client, delivery: str, kind: str, user_id: str
) -> str | None:
    """Why this Slack user may not `kind` (pause, resume, abort) the delivery, or None (aicd.steering; other
    kinds are the workflow's to decide). ActionRefused: no such delivery."""
    if kind not in STEERING:
        return None
    approvers = plan_approvers(await delivery_plan(client, delivery))
    if may_steer(user_id, "slack", kind, approvers, gateway.settings.slack_operators):
        return None
    return _not_permitted(user_id, kind, [delivery])


def _not_permitted(user_id: str, kind: str, deliveries: list[str]) -> str:
    return f"{user_id} is not an approver or a Slack operator, so may not {kind} {', '.join(deliveries)}"


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
            approvers = Roster.of(loaded.spec.people, candidate.approval.approvers).names()
            return ApprovalInfo(approvers, candidate.approval.min_approvals)
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
    if not SLACK_ID.fullmatch(user_id):
        return _refuse(gateway, "commands", 400, "malformed command: user_id is not a Slack user ID")
    elsewhere = _other_workspace(gateway, form.get("team_id"), form.get("enterprise_id"))
    if elsewhere:
        return _refuse(gateway, "commands", 403, elsewhere)
    words = form.get("text", "").split()
    task = asyncio.ensure_future(run_command(gateway, words, user_id, slack_request_id(request)))
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


async def run_command(
    gateway: Gateway, words: list[str], user_id: str, request_id: str | None = None
) -> tuple[bool, str]:
    """(answer only to the user?, text) for `/aicd WORDS...`."""
    sub = words[0].lower() if words else "help"
    kind = sub if sub in ("status", "pause", "resume", "approve", *OVERRIDE_KINDS) else "help"
    try:
        private, text = await _command(gateway, sub, words[1:], user_id, request_id)
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
    gateway: Gateway, sub: str, args: list[str], user_id: str, request_id: str | None
) -> tuple[bool, str]:
    if sub == "help":
        return True, COMMAND_HELP
    if sub in ("status", "pause", "resume"):
        if not args or not APP_NAME.fullmatch(args[0]):
            return True, f"Usage: `/aicd {sub} APP`" + (" `[reason]`" if sub == "pause" else "")
        app = args[0]
        client = await gateway.client()
        if sub == "status":
            return True, await _status_text(client, app)
        reason = " ".join(args[1:]) or f"{sub}d from Slack"
        refused: list[str] = []

        async def refusal(delivery: str) -> str | None:
            why = await steering_refusal(gateway, client, delivery, sub, user_id)
            if why is not None:
                refused.append(delivery)
            return why

        action = HumanAction(user_id, reason, via="slack")
        outcomes = await act_on_app(client, app, sub, action, refusal, request_id=request_id)
        if not outcomes:
            return True, f"No running delivery of *{escape(app)}*."
        if len(refused) == len(outcomes):  # may steer none of them: only this user hears of it
            log.info("/aicd %s %s by %s refused: %s", sub, app, user_id, ", ".join(refused))
            raise ActionRefused(_not_permitted(user_id, sub, refused))
        lines = [f"`{escape(delivery)}`: {escape(outcome)}" for delivery, outcome in outcomes]
        return False, f"{who(user_id)} ran `{sub}` on *{escape(app)}*:\n" + "\n".join(lines)
    if sub == "approve":
        if len(args) != 2 or not DELIVERY_ID.fullmatch(args[0]) or not STAGE_NAME.fullmatch(args[1]):
            return True, "Usage: `/aicd approve DELIVERY STAGE`"
        client = await gateway.client()
        outcome = await send_action(
            client,
            args[0],
            APPROVE,
            HumanAction(user_id, "approved from Slack", args[1], via="slack"),
            request_id=request_id,
        )
        return False, f"{who(user_id)}: {escape(outcome)} of `{escape(args[0])}`"
    if sub in OVERRIDE_KINDS:
        # The workflow's validator decides: only people the spec lists, and never without a reason.
        if len(args) < 2 or not DELIVERY_ID.fullmatch(args[0]):
            return True, f"Usage: `/aicd {sub} DELIVERY REASON`"
        client = await gateway.client()
        reason = " ".join(args[1:])
        kind = "break_glass" if sub == "break-glass" else "override"
        action = HumanAction(user_id, reason, via="slack")
        outcome = await send_action(client, args[0], kind, action, request_id=request_id)
        return False, f"{who(user_id)} ran `{sub}` ({escape(reason)}): {escape(outcome)}"
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
