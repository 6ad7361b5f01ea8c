"""Who may steer a delivery: pause, resume and abort it. One rule, applied by every front door that knows who
is asking (the dashboard, the Slack gateway); data in, data out.

Approve and reject are not decided here: the workflow's validators accept them only from the stage's listed
approvers. Pause, resume and abort the workflow accepts from anyone (resuming a `pause: {}` step is, in
effect, a promotion), so a front door asks `may_steer` first, and sends nothing when it says no. Allowed:
the approvers of any stage of that delivery (its plan, as it was started), and the front door's own
operators; `*` among the operators lets anyone it has identified. Identities match exactly, as approvals do:
a Slack user ID is compared with the IDs listed, never with a name.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aicd.plan import DeliveryPlan

STEERING = ("pause", "resume", "abort")
ANYONE = "*"


def may_steer(identity: str, kind: str, approvers: Collection[str], operators: Collection[str]) -> bool:
    """Whether `identity` may take the action `kind` on a delivery whose approvers (any stage) are
    `approvers`, where `operators` may steer every delivery. Kinds other than steering are the workflow's to
    decide: True."""
    if kind not in STEERING:
        return True
    return ANYONE in operators or identity in operators or identity in approvers


def plan_approvers(plan: DeliveryPlan | None) -> list[str]:
    """Everyone listed as an approver in any stage of the plan, in order, each once."""
    if plan is None:
        return []
    names: list[str] = []
    for stage in plan.stages:
        if stage.approval:
            names += [name for name in stage.approval.approvers if name not in names]
    return names


def parse_operators(text: str) -> frozenset[str]:
    """An operators setting: identities separated by commas (blanks around them ignored), or `*`."""
    return frozenset(name.strip() for name in text.split(",") if name.strip())
