"""Notification activities (Slack). Without a bot token they do nothing; they never fail a delivery."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from temporalio import activity


@dataclass
class NotifyRequest:
    channel: str
    event: str  # started | stage | approval | step | paused | resumed | failed | rolled-back | finished
    status: dict[str, Any]  # DeliveryStatus as a dict
    detail: str = ""


@activity.defn(name="notify")
async def notify(request: NotifyRequest) -> str:
    if not os.environ.get("SLACK_BOT_TOKEN"):
        return "skipped: no SLACK_BOT_TOKEN"
    return "skipped: slack notifications not configured"
