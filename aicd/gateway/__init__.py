"""HTTP gateway: Git webhooks (GitHub, GitLab) that start deliveries, Slack interactions and slash commands
that steer them, health and Prometheus metrics. `aicd serve` runs it under uvicorn."""

from __future__ import annotations

from aicd.gateway.app import create_app
from aicd.gateway.context import Gateway, GatewaySettings

__all__ = ["Gateway", "GatewaySettings", "create_app"]
