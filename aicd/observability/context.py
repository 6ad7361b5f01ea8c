"""Which delivery, app, stage and target a piece of work belongs to, read from Temporal's workflow IDs.

A DeliveryWorkflow's ID is `delivery-<app>-<revision>[-<suffix>]` (aicd.plan.delivery_id) and a target's
rollout child is `<delivery id>--<stage>--<target>` (workflows.delivery), so the workflow ID of an activity
tells all four without any change to the activities.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass, replace
from typing import Any

CHILD_SEPARATOR = "--"
_DELIVERY_ID = re.compile(
    r"^delivery-(?P<app>[a-z0-9][a-z0-9-]*?)-(?P<revision>[0-9a-f]{40}(?:[0-9a-f]{24})?)(?:-.+)?$"
)


@dataclass(frozen=True)
class DeliveryContext:
    delivery_id: str = ""
    app: str = ""
    stage: str = ""
    target: str = ""

    def fields(self) -> dict[str, str]:
        return {key: value for key, value in vars(self).items() if value}

    def with_request(self, request: Any) -> DeliveryContext:
        """Stage and target named by an activity's request (a sync of the parent delivery, a fleet chunk)."""
        stage, target = getattr(request, "stage", None), getattr(request, "target", None)
        if not isinstance(stage, str) or not isinstance(target, str):
            return self
        return replace(self, stage=self.stage or stage, target=self.target or target)


def from_workflow_id(workflow_id: str) -> DeliveryContext:
    """The delivery context of a workflow ID; empty fields where the ID is not aicd's."""
    delivery_id, stage, target = workflow_id, "", ""
    parts = workflow_id.split(CHILD_SEPARATOR)
    if len(parts) >= 3:
        delivery_id, stage, target = CHILD_SEPARATOR.join(parts[:-2]), parts[-2], parts[-1]
    match = _DELIVERY_ID.match(delivery_id)
    if match is None:
        return DeliveryContext()
    return DeliveryContext(delivery_id, match.group("app"), stage, target)


# The context of the activity running in this task (or thread: asyncio.to_thread copies it).
CURRENT: contextvars.ContextVar[DeliveryContext | None] = contextvars.ContextVar(
    "aicd_delivery_context", default=None
)
