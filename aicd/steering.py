"""Who may steer a delivery: pause, resume and abort it. One rule, applied by every front door that knows who
is asking (the dashboard, the Slack gateway); data in, data out.

Approve and reject are not decided here: the workflow's validators accept them only from the stage's listed
approvers. Pause, resume and abort the workflow accepts from anyone (resuming a `pause: {}` step is, in
effect, a promotion), so a front door asks `may_steer` first, and sends nothing when it says no. Allowed:
the approvers of any stage of that delivery (its plan, as it was started), and the front door's own
operators; `*` among the operators lets anyone it has identified. Identities resolve to people as approvals
do (aicd.people): a person's Slack user ID counts as that person from Slack, never a name.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from aicd.people import Roster

if TYPE_CHECKING:
    from aicd.plan import DeliveryPlan

STEERING = ("pause", "resume", "abort")
ANYONE = "*"


def may_steer(identity: str, via: str, kind: str, approvers: Roster, operators: Collection[str]) -> bool:
    """Whether `identity`, acting through the channel `via`, may take the action `kind` on a delivery whose
    approvers (any stage) are `approvers`, where `operators` (the front door's own identities, compared
    exactly) may steer every delivery. Kinds other than steering are the workflow's to decide: True."""
    if kind not in STEERING:
        return True
    return ANYONE in operators or identity in operators or approvers.admits(identity, via)


def plan_approvers(plan: DeliveryPlan | None) -> Roster:
    """Everyone listed as an approver in any stage of the plan, read through its people (aicd.people)."""
    if plan is None:
        return Roster((), ())
    entries = [name for stage in plan.stages if stage.approval for name in stage.approval.approvers]
    return Roster.of(plan.people, entries)


def parse_operators(text: str) -> frozenset[str]:
    """An operators setting: identities separated by commas (blanks around them ignored), or `*`."""
    return frozenset(name.strip() for name in text.split(",") if name.strip())
