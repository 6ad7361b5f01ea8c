"""When a delivery tells Slack, decided in workflow code: each notification is an activity, so what counts as
news is part of the delivery's command sequence and must stay as deterministic and as stable as the rest of
it. aicd.slack_blocks only renders what is decided here."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from aicd.messages import TargetStatus

# What makes a target's progress worth a thread reply: its stage, state, step, step kind, weight and final
# verdict outcome.
ProgressKey = tuple[str, str, int, str, int, str]


def progress_key(target: TargetStatus) -> ProgressKey:
    """A target's progress as far as news goes; interim analysis looks ("running") are not news."""
    verdict = target.last_verdict
    outcome = "" if verdict is None else str(verdict.outcome)
    return (
        target.stage,
        target.state,
        target.step_index,
        target.step_kind,
        target.weight,
        "" if outcome == "running" else outcome,
    )


def progress_changes(
    targets: Mapping[str, TargetStatus], reported: Mapping[str, ProgressKey]
) -> list[tuple[str, ProgressKey]]:
    """(target, its new progress key) for each target whose progress changed since it was last reported."""
    changes = []
    for name, target in targets.items():
        key = progress_key(target)
        if reported.get(name) != key:
            changes.append((name, key))
    return changes
