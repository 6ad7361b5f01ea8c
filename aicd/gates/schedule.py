"""Deploy windows, freezes and holidays: the spec's `schedule`, the organisation's calendar file in the GitOps
repository, and the freezes set with `aicd freeze` (aicd.governance.calendar decides). A closed window holds
the stage until it opens ("waiting for window", with when); a freeze holds it until it ends or is lifted.
Either lets one delivery's stage through by break-glass of a listed person (the spec's and the calendar's
`breakGlass`), with a reason."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from aicd.gates.base import GateAnswer, GateContext, GateHold, GateRequest
from aicd.governance.calendar import CalendarInvalid, RuleSet, check, parse_calendar, spec_rules
from aicd.governance.model import FreezeRule, PolicyPlan, SchedulePlan, matches

BUTTON = "aicd freeze"


def global_rules(freezes: list[dict[str, str]]) -> RuleSet:
    """The freeze button's freezes as a rule set: each holds the apps its glob matches until lifted."""
    return RuleSet(
        source=BUTTON,
        timezone="UTC",
        freezes=[
            FreezeRule(
                name=f"frozen by {freeze['actor']}",
                start=freeze["since"],
                until=None,
                reason=freeze.get("reason", ""),
                apps=[freeze["app"]] if freeze.get("app", "*") != "*" else [],
            )
            for freeze in freezes
        ],
    )


class ScheduleGate:
    name: ClassVar[str] = "schedule"

    def applies(self, request: GateRequest) -> bool:
        return request.schedule is not None and request.wave is None and "break-glass" not in request.skip

    def plan_lines(self, policy: PolicyPlan | None, schedule: SchedulePlan | None, stage: str) -> list[str]:
        if schedule is None:
            return []
        lines = []
        if matches(schedule.stages, stage):
            lines += [f"deploy window: {window.describe(schedule.timezone)}" for window in schedule.windows]
            lines += [
                f"freeze {freeze.name}: {freeze.start} until {freeze.until or 'lifted'}"
                for freeze in schedule.freezes
            ]
            lines += [f"holiday {day}" for day in schedule.holidays]
        if schedule.calendar:
            lines.append(f"calendar: {schedule.calendar} in the GitOps repo; `aicd freeze` holds it too")
        if schedule.break_glass:
            lines.append(f"break-glass: {', '.join(schedule.break_glass)}")
        return lines

    async def check(self, context: GateContext, request: GateRequest, answer: GateAnswer) -> None:
        schedule = request.schedule
        assert schedule is not None
        rule_sets = [spec_rules(schedule)]
        if schedule.calendar:
            files = await context.gitops_files(
                request.gitops_repo, request.gitops_branch, [schedule.calendar], ".yaml"
            )
            if schedule.calendar in files:
                try:
                    rule_sets.append(parse_calendar(files[schedule.calendar].encode(), schedule.calendar))
                except CalendarInvalid as invalid:
                    # A broken calendar holds (fail closed) and says where; fixing it is a reviewed commit.
                    answer.holds.append(
                        GateHold(
                            "freeze",
                            f"calendar invalid: {invalid}",
                            "break-glass",
                            schedule.break_glass,
                            recheck_s=schedule.recheck_s,
                        )
                    )
                    return
        rule_sets.append(global_rules(await context.global_freezes()))
        at = datetime.fromisoformat(request.at)
        result = check(at, request.app, request.stage, rule_sets)
        overriders = result.break_glass
        if result.freeze is not None:
            answer.holds.append(
                GateHold(
                    "freeze",
                    result.freeze.reason + (f" until {result.freeze.until}" if result.freeze.until else ""),
                    "break-glass",
                    overriders,
                    until=result.freeze.until,
                    recheck_s=schedule.recheck_s,
                )
            )
        if result.window is not None:
            opens = result.window.until
            # Asked again when it opens (no polling through a weekend); a window that opens nowhere soon
            # is asked again at the usual recheck (the calendar may change).
            wait = (datetime.fromisoformat(opens) - at).total_seconds() if opens else schedule.recheck_s
            answer.holds.append(
                GateHold(
                    "window",
                    f"waiting for window: opens {opens}" if opens else "waiting for window: none opens soon",
                    "break-glass",
                    overriders,
                    messages=[result.window.reason],
                    until=opens,
                    recheck_s=max(wait, 1.0),
                )
            )
