"""Loopback stand-in for the Slack Web API, reached by the real slack-sdk through its base_url.

It records every call and answers like Slack does, and it is strict where a client can go wrong:
- every call needs `Authorization: Bearer <a token it knows>` (`not_authed` / `invalid_auth` otherwise);
- required arguments per method: chat.postMessage (channel; text or blocks), chat.update (channel *ID*, ts
  of an existing message; text or blocks), chat.postEphemeral (channel, user; text or blocks),
  conversations.history (channel ID); `thread_ts` must name an existing message of the channel and
  `reply_broadcast` needs a `thread_ts`;
- Block Kit shapes and limits: at most 50 blocks, known block types, section text <= 3000 characters and at
  most 10 fields, buttons with plain_text labels <= 75, action_id <= 255, value <= 2000, style
  primary|danger, confirm objects with title/text/confirm/deny; action_ids unique within a message;
- answers `{ok: true, channel: <ID>, ts, message}` with a fresh `ts` per message, errors as
  `{ok: false, error}` with HTTP 200 (as Slack does), unknown methods `unknown_method`.
`fail_with(500)` makes every call answer that HTTP status (Slack down); `stop()` closes the port.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aicd.dev.ports import bind_socket
from aicd.dev.proxy import RunningServer, start_server
from aicd.testing.polling import poll_until

BLOCK_TYPES = {"section", "actions", "context", "header", "divider"}


class SlackError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.answer.get("ok"))


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    broadcast: bool = False
    metadata: dict[str, Any] | None = None
    updates: int = 0


class SlackStandIn:
    def __init__(
        self, tokens: tuple[str, ...] = ("xoxb-test",), channels: dict[str, str] | None = None
    ) -> None:
        self.tokens = set(tokens)
        self.channels = channels or {"#deploys": "C0DEPLOYS", "#ops": "C0OPS"}
        self.calls: list[Call] = []
        self.messages: dict[str, Message] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.fail_status: int | None = None
        self._ts = itertools.count(1)
        self._server: RunningServer | None = None
        self.port = 0

    # --- lifecycle --------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def start(self) -> str:
        app = Starlette(routes=[Route("/api/{method}", self._endpoint, methods=["GET", "POST"])])
        self._server = await start_server(app, bind_socket(port=self.port), "Slack stand-in")
        self.port = self._server.port
        return self.base_url

    async def stop(self) -> None:
        """Close the port (Slack unreachable); `start()` opens it again on the same port."""
        if self._server is not None:
            await self._server.stop()
        self._server = None

    def fail_with(self, status: int | None) -> None:
        self.fail_status = status

    # --- what tests look at -------------------------------------------------------------------------------
    def calls_of(self, method: str, *, token: str | None = None, ok: bool | None = None) -> list[Call]:
        return [
            call
            for call in self.calls
            if call.method == method
            and (token is None or call.token == token)
            and (ok is None or call.ok == ok)
        ]

    def top_level(self, channel_id: str | None = None) -> list[Message]:
        return [
            m
            for m in self.messages.values()
            if m.thread_ts is None and (channel_id is None or m.channel == channel_id)
        ]

    def replies(self, ts: str) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts == ts]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        return await poll_until(
            predicate, timeout, lambda: f"stand-in Slack saw calls {[c.method for c in self.calls]}"
        )

    # --- the API ---------------------------------------------------------------------------------------------
    async def _endpoint(self, request: Request) -> Response:
        method = request.path_params["method"]
        args = await _arguments(request)
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        call = Call(method, args, token)
        self.calls.append(call)
        if self.fail_status is not None:
            call.status = self.fail_status
            return Response("upstream trouble", status_code=self.fail_status, media_type="text/html")
        try:
            if not request.headers.get("authorization", "").startswith("Bearer ") or not token:
                raise SlackError("not_authed")
            if token not in self.tokens:
                raise SlackError("invalid_auth")
            handler = getattr(self, "_" + method.replace(".", "_"), None)
            if handler is None:
                raise SlackError("unknown_method")
            answer: dict[str, Any] = {"ok": True, **handler(args)}
        except SlackError as error:
            answer = {"ok": False, "error": error.code}
        call.answer = answer
        return JSONResponse(answer)

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"user_id": "UBOT", "team_id": "T0", "bot_id": "B0"}

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args, allow_name=True)
        text, blocks = _content(args)
        thread_ts = args.get("thread_ts")
        if thread_ts is not None:
            parent = self.messages.get(str(thread_ts))
            if parent is None or parent.channel != channel or parent.thread_ts is not None:
                raise SlackError("thread_not_found")
        broadcast = _bool(args.get("reply_broadcast"))
        if broadcast and thread_ts is None:
            raise SlackError("invalid_arguments")
        metadata = args.get("metadata")
        if "metadata" in args and not (
            isinstance(metadata, dict) and metadata.get("event_type") and "event_payload" in metadata
        ):
            raise SlackError("invalid_metadata_format")
        ts = self._next_ts()
        self.messages[ts] = Message(
            channel, ts, text, blocks, thread_ts and str(thread_ts), broadcast, metadata
        )
        return {"channel": channel, "ts": ts, "message": {"text": text, "blocks": blocks, "ts": ts}}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args, allow_name=False)
        ts = str(args.get("ts") or "")
        if not ts:
            raise SlackError("invalid_arguments")
        message = self.messages.get(ts)
        if message is None or message.channel != channel:
            raise SlackError("message_not_found")
        message.text, message.blocks = _content(args)
        message.updates += 1
        return {"channel": channel, "ts": ts, "text": message.text}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args, allow_name=True)
        if not args.get("user"):
            raise SlackError("user_not_in_channel")
        text, blocks = _content(args)
        self.ephemerals.append({"channel": channel, "user": args["user"], "text": text, "blocks": blocks})
        return {"message_ts": self._next_ts()}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args, allow_name=False)
        with_metadata = _bool(args.get("include_all_metadata"))
        found = [m for m in self.messages.values() if m.channel == channel and m.thread_ts is None]
        found.sort(key=lambda m: float(m.ts), reverse=True)
        limit = int(args.get("limit") or 100)
        messages = []
        for message in found[:limit]:
            item: dict[str, Any] = {"type": "message", "ts": message.ts, "text": message.text}
            if with_metadata and message.metadata:
                item["metadata"] = message.metadata
            messages.append(item)
        return {"messages": messages, "has_more": len(found) > limit}

    # --- checks ----------------------------------------------------------------------------------------------
    def _channel(self, args: dict[str, Any], *, allow_name: bool) -> str:
        channel = str(args.get("channel") or "")
        if not channel:
            raise SlackError("channel_not_found")
        if channel in self.channels.values():
            return channel
        if allow_name and channel in self.channels:
            return self.channels[channel]
        raise SlackError("channel_not_found")

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"


async def _arguments(request: Request) -> dict[str, Any]:
    args: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body:
        return args
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        args.update(json.loads(body))
    else:
        args.update(dict(parse_qsl(body.decode())))
    for key in ("blocks", "metadata"):  # form posts carry these as JSON strings
        if isinstance(args.get(key), str):
            try:
                args[key] = json.loads(args[key])
            except json.JSONDecodeError:
                args[key] = None  # answered as invalid_blocks_format / invalid_metadata_format
    return args


def _bool(value: Any) -> bool:
    return value in (True, "true", "1", 1)


def _content(args: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    text = str(args.get("text") or "")
    blocks = args.get("blocks")
    if blocks is None and "blocks" in args:
        raise SlackError("invalid_blocks_format")
    blocks = blocks or []
    if not text and not blocks and not args.get("attachments"):
        raise SlackError("no_text")
    if len(text) > 40000:
        raise SlackError("msg_too_long")
    _check_blocks(blocks)
    return text, blocks


def _check_blocks(blocks: Any) -> None:
    if not isinstance(blocks, list) or len(blocks) > 50:
        raise SlackError("invalid_blocks")
    action_ids: set[str] = set()
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise SlackError("invalid_blocks")
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                raise SlackError("invalid_blocks")
            if "text" in block:
                _check_text(block["text"], 3000)
            fields = block.get("fields", [])
            if len(fields) > 10:
                raise SlackError("invalid_blocks")
            for item in fields:
                _check_text(item, 2000)
        elif kind == "context":
            elements = block.get("elements") or []
            if not elements or len(elements) > 10:
                raise SlackError("invalid_blocks")
            for item in elements:
                _check_text(item, 3000)
        elif kind == "actions":
            elements = block.get("elements") or []
            if not elements or len(elements) > 25:
                raise SlackError("invalid_blocks")
            for element in elements:
                _check_button(element)
                if element["action_id"] in action_ids:
                    raise SlackError("invalid_blocks")
                action_ids.add(element["action_id"])


def _check_text(text: Any, limit: int, kinds: tuple[str, ...] = ("mrkdwn", "plain_text")) -> None:
    if not isinstance(text, dict) or text.get("type") not in kinds:
        raise SlackError("invalid_blocks")
    value = text.get("text")
    if not isinstance(value, str) or not value or len(value) > limit:
        raise SlackError("invalid_blocks")


def _check_button(element: Any) -> None:
    if not isinstance(element, dict) or element.get("type") != "button":
        raise SlackError("invalid_blocks")
    _check_text(element.get("text"), 75, ("plain_text",))
    action_id = element.get("action_id")
    if not isinstance(action_id, str) or not action_id or len(action_id) > 255:
        raise SlackError("invalid_blocks")
    if len(str(element.get("value", ""))) > 2000:
        raise SlackError("invalid_blocks")
    if element.get("style") not in (None, "primary", "danger"):
        raise SlackError("invalid_blocks")
    confirm = element.get("confirm")
    if confirm is not None:
        if not isinstance(confirm, dict):
            raise SlackError("invalid_blocks")
        _check_text(confirm.get("title"), 100, ("plain_text",))
        _check_text(confirm.get("text"), 300)
        _check_text(confirm.get("confirm"), 30, ("plain_text",))
        _check_text(confirm.get("deny"), 30, ("plain_text",))
