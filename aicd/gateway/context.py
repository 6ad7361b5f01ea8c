"""What every gateway endpoint shares: settings (secrets from the environment, never logged), the spec
directory, metrics, the replay memory, the Temporal client (connected on first use, so the gateway starts
and answers health checks while Temporal is still coming up) and the Slack Web API client."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import JSONResponse
from temporalio.client import Client

from aicd.gateway.metrics import Metrics
from aicd.gateway.signatures import ReplayCache
from aicd.gateway.specs import SpecDirectory
from aicd.slack_blocks import SLACK_ID
from aicd.steering import ANYONE, parse_operators
from aicd.temporal import connect

GITHUB_SECRET_ENV = "AICD_GITHUB_WEBHOOK_SECRET"
GITLAB_TOKEN_ENV = "AICD_GITLAB_WEBHOOK_TOKEN"
SLACK_SIGNING_SECRET_ENV = "AICD_SLACK_SIGNING_SECRET"
# Slack user IDs who may pause, resume and abort every delivery from Slack, besides its approvers; `*`: anyone.
SLACK_OPERATORS_ENV = "AICD_SLACK_OPERATORS"
# Slack workspace (team) or Enterprise Grid org IDs whose requests are acted on; unset: any workspace the app
# is installed in (one signing secret signs requests from all of them).
SLACK_TEAMS_ENV = "AICD_SLACK_TEAMS"
SLACK_TEAM_ID = re.compile(r"^[TE][A-Z0-9]+$")
# The same variables the notify activity reads (the gateway does not import activities).
SLACK_TOKEN_ENV = "SLACK_BOT_TOKEN"
SLACK_API_URL_ENV = "SLACK_API_URL"
SLACK_DEFAULT_API_URL = "https://slack.com/api/"
WEBHOOK_MAX_BODY_ENV = "AICD_WEBHOOK_MAX_BODY_BYTES"
# GitHub sends push payloads up to 25 MB (a push of large commits lists them all); Slack's are small.
MAX_BODY_BYTES = 25 * 1024 * 1024
SLACK_MAX_BODY_BYTES = 1 << 20


@dataclass
class GatewaySettings:
    specs_dir: Path
    task_queue: str | None = None
    github_secret: str | None = field(default=None, repr=False)
    gitlab_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_api_url: str | None = None
    slack_operators: frozenset[str] = frozenset()  # aicd.steering: besides each delivery's approvers
    slack_teams: frozenset[str] = frozenset()  # empty: every workspace the app is installed in
    max_body_bytes: int = MAX_BODY_BYTES
    reload_interval_s: float = 2.0
    replay_ttl_s: float = 24 * 3600.0
    index_search_attributes: bool = True

    @classmethod
    def from_env(cls, specs_dir: Path, task_queue: str | None = None, **overrides: Any) -> GatewaySettings:
        env = os.environ
        return cls(
            specs_dir=specs_dir,
            task_queue=task_queue,
            github_secret=env.get(GITHUB_SECRET_ENV) or None,
            gitlab_token=env.get(GITLAB_TOKEN_ENV) or None,
            slack_signing_secret=env.get(SLACK_SIGNING_SECRET_ENV) or None,
            slack_bot_token=env.get(SLACK_TOKEN_ENV) or None,
            slack_api_url=env.get(SLACK_API_URL_ENV) or None,
            slack_operators=slack_operators(env.get(SLACK_OPERATORS_ENV, "")),
            slack_teams=slack_teams(env.get(SLACK_TEAMS_ENV, "")),
            **{"max_body_bytes": _bytes(env.get(WEBHOOK_MAX_BODY_ENV), MAX_BODY_BYTES), **overrides},
        )


def slack_operators(text: str) -> frozenset[str]:
    """AICD_SLACK_OPERATORS: Slack user IDs (comma-separated), or `*`. A name would never match the user ID
    of who clicks, so it is refused here rather than silently ignored."""
    operators = parse_operators(text)
    for name in sorted(operators):
        if name != ANYONE and not SLACK_ID.fullmatch(name):
            raise ValueError(
                f"{SLACK_OPERATORS_ENV}: {name[:40]!r} is not a Slack user ID (like U024BE7LH) or *"
            )
    return operators


def slack_teams(text: str) -> frozenset[str]:
    """AICD_SLACK_TEAMS: Slack workspace IDs (T...) or Enterprise Grid org IDs (E...), comma-separated."""
    teams = frozenset(part.strip() for part in text.split(",") if part.strip())
    for team in sorted(teams):
        if not SLACK_TEAM_ID.fullmatch(team):
            raise ValueError(
                f"{SLACK_TEAMS_ENV}: {team[:40]!r} is not a Slack workspace ID (like T0001) or org ID (like E0001)"
            )
    return teams


def _bytes(value: str | None, default: int) -> int:
    if not value:
        return default
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{WEBHOOK_MAX_BODY_ENV} must be a positive number of bytes, not {value!r}")
    return int(value)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body (signatures are over exact bytes), read with a cap so a huge body cannot fill memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


class PayloadInvalid(Exception):
    """A request body of the wrong form or shape; its text is the one-line reason the sender gets (400)."""


def parse_json_object(body: bytes | str, what: str = "JSON") -> dict[str, Any]:
    """A JSON object from a request, or PayloadInvalid with a one-line reason (never a traceback: nesting
    deep enough to exhaust the parser's recursion is a malformed request like any other)."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise PayloadInvalid(f"malformed {what}: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as failure:
        raise PayloadInvalid(f"malformed {what}: {failure}") from None
    if not isinstance(payload, dict):
        raise PayloadInvalid(f"malformed {what}: expected an object")
    return payload


def error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        client: Client | None = None,
        connector: Callable[[], Awaitable[Client]] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.specs = SpecDirectory(settings.specs_dir, self.metrics)
        self.replays = ReplayCache(settings.replay_ttl_s)
        self._client = client
        self._connector = connector or connect
        self._client_lock = asyncio.Lock()
        self._slack: AsyncWebClient | None = None

    async def client(self) -> Client:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await self._connector()
        return self._client

    def slack(self) -> AsyncWebClient | None:
        if self._slack is None and self.settings.slack_bot_token:
            self._slack = AsyncWebClient(
                token=self.settings.slack_bot_token,
                base_url=self.settings.slack_api_url or SLACK_DEFAULT_API_URL,
                timeout=10,
            )
        return self._slack

    async def refresh_specs(self) -> None:
        await asyncio.to_thread(self.specs.reload)
