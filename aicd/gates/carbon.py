"""Carbon-aware timing: a stage waits until a Prometheus query (grid carbon intensity, say) is below a
threshold, checked every interval, at most `maxDelay` after it first waited; then it goes anyway, so the
weather never holds a delivery for ever. A query that cannot be answered does not hold (it only delays)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from aicd.gates.base import GateAnswer, GateContext, GateHold, GateRequest
from aicd.governance.model import PolicyPlan, SchedulePlan, matches


class CarbonGate:
    name: ClassVar[str] = "carbon"

    def applies(self, request: GateRequest) -> bool:
        schedule = request.schedule
        return (
            schedule is not None
            and schedule.carbon is not None
            and request.wave is None
            and matches(schedule.carbon.stages, request.stage)
            and "break-glass" not in request.skip
        )

    def plan_lines(self, policy: PolicyPlan | None, schedule: SchedulePlan | None, stage: str) -> list[str]:
        if schedule is None or schedule.carbon is None or not matches(schedule.carbon.stages, stage):
            return []
        return [schedule.carbon.describe()]

    async def check(self, context: GateContext, request: GateRequest, answer: GateAnswer) -> None:
        assert request.schedule is not None and request.schedule.carbon is not None
        carbon = request.schedule.carbon
        deadline = datetime.fromisoformat(request.held_since) + timedelta(seconds=carbon.max_delay_s)
        at = datetime.fromisoformat(request.at)
        if at >= deadline:
            answer.warnings.append(
                f"carbon-aware wait ended after its maximum delay; {carbon.query} was not below {carbon.below:g}"
            )
            return
        value = await context.prometheus_value(carbon.prometheus, carbon.query)
        if value is None:
            answer.warnings.append(f"carbon-aware: {carbon.query} has no value; not waiting for it")
            return
        if value < carbon.below:
            return
        recheck = min(carbon.interval_s, (deadline - at).total_seconds())
        answer.holds.append(
            GateHold(
                "carbon",
                f"waiting for lower carbon intensity: {carbon.query} = {value:g}, waiting for < {carbon.below:g}"
                f" (at most until {deadline.isoformat()})",
                "break-glass",
                list(request.schedule.break_glass),
                until=deadline.isoformat(),
                recheck_s=max(recheck, 1.0),
            )
        )
