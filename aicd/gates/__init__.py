"""Gate kinds: what may hold a stage before it starts, one small unit each, registered here (the approval
gate, which waits for people rather than asking anything, stays in the delivery workflow). A kind answers
a GateRequest through a GateContext (aicd.gates.base); the gate activity (aicd.activities.governance) asks
every kind that applies, in this order, and the delivery waits while any holds."""

from __future__ import annotations

from aicd.gates.base import (
    OVERRIDE_KINDS,
    GateAnswer,
    GateContext,
    GateHold,
    GateKind,
    GateRequest,
    OverrideKind,
)
from aicd.gates.carbon import CarbonGate
from aicd.gates.policy import PolicyGate
from aicd.gates.schedule import ScheduleGate
from aicd.governance.model import IncidentPlan, PolicyPlan, SchedulePlan
from aicd.spec.durations import format_duration

GATE_KINDS: tuple[GateKind, ...] = (ScheduleGate(), CarbonGate(), PolicyGate())
if len({kind.name for kind in GATE_KINDS}) != len(GATE_KINDS):
    raise RuntimeError("two gate kinds share a name")


def gate_lines(policy: PolicyPlan | None, schedule: SchedulePlan | None, stage: str) -> list[str]:
    """What `aicd plan` says about the gates of a stage."""
    return [line for kind in GATE_KINDS for line in kind.plan_lines(policy, schedule, stage)]


def incident_lines(incidents: IncidentPlan | None) -> list[str]:
    if incidents is None:
        return []
    lines = []
    if incidents.pagerduty_key is not None:
        lines.append(
            f"incidents: PagerDuty Events v2 (routing key from {incidents.pagerduty_key.describe()},"
            f" severity {incidents.severity}): trigger on failure, rollback or abort; resolve on a later success"
        )
    if incidents.webhook_url:
        signed = " signed (HMAC-SHA256)" if incidents.webhook_secret else ""
        lines.append(f"incidents: CloudEvents webhook {incidents.webhook_url}{signed}")
    if incidents.waiting_too_long_s:
        lines.append(
            f"incidents: a delivery waiting longer than {format_duration(incidents.waiting_too_long_s)} triggers too"
        )
    return lines


__all__ = [
    "GATE_KINDS",
    "OVERRIDE_KINDS",
    "GateAnswer",
    "GateContext",
    "GateHold",
    "GateKind",
    "GateRequest",
    "OverrideKind",
    "gate_lines",
    "incident_lines",
]
