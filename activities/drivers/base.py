"""Target drivers: how a committed desired state reaches a target and when it counts as healthy.

Each target kind (aicd.targets: its typed config, schema and checks) that is not a fleet has one driver here,
listed in aicd.activities.drivers. The `sync_target` activity looks the driver up by kind; workflows never
branch on kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from temporalio.exceptions import ApplicationError

from aicd.errors import ErrorType
from aicd.targets import TARGET_KINDS, TargetConfig, TargetKind


@dataclass
class SyncRequest:
    """Make target `target` run GitOps commit `revision` and wait until it is healthy."""

    delivery_id: str  # e.g. "delivery-checkout-api-4f2c1d9e"
    stage: str
    target: str  # target name in the spec
    kind: str  # target kind (aicd.targets): git | argocd | local
    gitops_repo: str  # URL/path of the GitOps repository
    gitops_branch: str
    revision: str  # the GitOps commit SHA that must be running
    step: str  # step id, e.g. "production/prod-use1/0-setWeight"
    timeout_s: float = 600.0  # progress deadline for this sync
    settings: TargetConfig | None = None  # the kind's typed config; read it through typed()
    path: str = ""  # the target's file in the GitOps repository
    # Requests scheduled before `settings` carried the target's spec fields as written (`path` among them).
    config: dict[str, Any] = field(default_factory=dict)
    # Set by the step activity when its own push just put `revision` on the branch (CommitResult.pushed).
    pushed: bool = False

    def typed(self) -> TargetKind:
        return self.settings if self.settings is not None else TARGET_KINDS[self.kind].parse(self.config)

    def file(self) -> str | None:
        return self.path or self.config.get("path") or None


@dataclass
class SyncResult:
    target: str
    revision: str
    healthy: bool
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class SyncFailed(Exception):
    """The target reported a definite failure (Degraded, failed operation, deadline): do not retry."""


def config_error(message: str) -> ApplicationError:
    """The target's configuration is wrong (missing app, forbidden, untrusted certificate, unusable shape):
    retrying cannot help."""
    return ApplicationError(message, non_retryable=True, type=ErrorType.TARGET_CONFIG_ERROR)


class TargetDriver(Protocol):
    name: ClassVar[str]  # the target kind it drives

    async def sync(self, request: SyncRequest, heartbeat: Callable[..., None]) -> SyncResult:
        """Bring the target to `request.revision` and wait for health; raise SyncFailed on a definite failure,
        `config_error(...)` on a configuration error (missing app, forbidden, bad context), any other exception
        for transient trouble (it is retried)."""
        ...
