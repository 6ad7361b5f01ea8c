"""The gate kinds' decisions (aicd.gates) through a GateContext that hands them fixed answers: carbon-aware
waiting (hold above the threshold, go below it, give up after maxDelay, never hold on no data), which kinds
apply to a stage or a wave, and what an override of a kind skips."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aicd.gates import GATE_KINDS, GateAnswer, GateRequest, gate_lines
from aicd.gates.carbon import CarbonGate
from aicd.governance.model import policy_from, schedule_from
from aicd.spec.model import PrometheusConfig

NOW = "2026-12-07T12:00:00+00:00"


@dataclass
class Context:
    value: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    freezes: list[dict[str, str]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)

    async def gitops_files(self, repo: str, branch: str, paths: list[str], suffix: str) -> dict[str, str]:
        return {path: text for path, text in self.files.items() if any(path.startswith(p) for p in paths)}

    async def global_freezes(self) -> list[dict[str, str]]:
        return self.freezes

    async def reports(self, delivery_id: str) -> dict[str, Any]:
        return {}

    async def prometheus_value(self, prometheus: PrometheusConfig, query: str) -> float | None:
        self.queries.append(query)
        return self.value

    async def opa_decision(self, url: str, package: str, input_document: dict[str, Any]) -> Any:
        raise AssertionError("no OPA here")


CARBON = {
    "calendar": None,
    "breakGlass": ["lead"],
    "carbon": {
        "prometheus": {"url": "http://prometheus:9090"},
        "query": "grid_carbon_intensity",
        "below": 250,
        "maxDelay": "6h",
        "interval": "15m",
        "stages": ["prod*"],
    },
}


def request(stage: str = "production", at: str = NOW, held_since: str = NOW, **changes: Any) -> GateRequest:
    values: dict[str, Any] = {
        "delivery_id": "delivery-web-abc1234",
        "app": "web",
        "stage": stage,
        "wave": None,
        "at": at,
        "held_since": held_since,
        "gitops_repo": "/dev/null",
        "gitops_branch": "main",
        "schedule": schedule_from(CARBON),
    }
    values.update(changes)
    return GateRequest(**values)


async def carbon(context: Context, req: GateRequest) -> GateAnswer:
    answer = GateAnswer()
    await CarbonGate().check(context, req, answer)
    return answer


async def test_carbon_holds_while_above_the_threshold_and_rechecks_every_interval() -> None:
    answer = await carbon(Context(value=410.0), request())
    [hold] = answer.holds
    assert hold.gate == "carbon" and hold.override == "break-glass" and hold.overriders == ["lead"]
    assert "grid_carbon_intensity = 410, waiting for < 250" in hold.reason
    assert hold.recheck_s == 15 * 60 and hold.until == "2026-12-07T18:00:00+00:00"


async def test_carbon_goes_below_the_threshold_and_after_the_maximum_delay() -> None:
    assert (await carbon(Context(value=120.0), request())).holds == []
    late = request(at="2026-12-07T18:00:00+00:00", held_since=NOW)
    context = Context(value=999.0)
    answer = await carbon(context, late)
    assert answer.holds == [] and context.queries == []  # past maxDelay it goes without asking
    assert "maximum delay" in answer.warnings[0]
    near_end = await carbon(Context(value=999.0), request(at="2026-12-07T17:55:00+00:00", held_since=NOW))
    assert near_end.holds[0].recheck_s == 5 * 60  # never sleeps past the deadline


async def test_carbon_without_data_never_holds() -> None:
    answer = await carbon(Context(value=None), request())
    assert answer.holds == [] and "has no value" in answer.warnings[0]


def test_which_kinds_apply_to_a_stage_a_wave_and_after_an_override() -> None:
    policy = policy_from({"modules": ["policies/"], "everyWave": True, "stages": ["prod*"]})
    names = lambda req: [kind.name for kind in GATE_KINDS if kind.applies(req)]  # noqa: E731
    assert names(request(policy=policy)) == ["schedule", "carbon", "policy"]
    assert names(request(stage="staging", policy=policy)) == ["schedule"]
    assert names(request(wave=2, policy=policy)) == ["policy"]  # windows and freezes hold a stage, not a wave
    assert names(request(policy=policy, skip=["break-glass"])) == ["policy"]
    assert names(request(policy=policy, skip=["override"])) == ["schedule", "carbon"]
    lines = gate_lines(policy, schedule_from(CARBON), "production")
    assert "carbon-aware: wait until grid_carbon_intensity < 250, at most 6h" in lines
    assert any(line.startswith("policy gate: policy data.aicd.delivery") for line in lines)


async def test_freeze_button_and_a_spec_freeze_hold_with_break_glass() -> None:
    schedule = schedule_from({"calendar": None, "breakGlass": ["lead"], "freezes": [{"from": "2026-12-01"}]})
    answer = GateAnswer()
    await GATE_KINDS[0].check(Context(), request(schedule=schedule), answer)
    [hold] = answer.holds
    assert hold.gate == "freeze" and hold.until is None and hold.overriders == ["lead"]
    button = Context(
        freezes=[{"app": "w*", "actor": "oncall", "reason": "INC-1", "since": "2026-12-07T00:00:00+00:00"}]
    )
    answer = GateAnswer()
    await GATE_KINDS[0].check(button, request(schedule=schedule_from({"calendar": None})), answer)
    assert [hold.gate for hold in answer.holds] == ["freeze"] and "INC-1" in answer.holds[0].reason
