"""`strategy: {canary: {steps}}`: the steps in order (weights, pauses, analyses, verification runs, flag
changes), then the promotion: the release becomes stable and the canary stops, in one commit."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from aicd.spec.yamlsafe import Path
from aicd.steps import Step, parse_step
from aicd.steps.base import Finding, StepKind
from aicd.strategies.base import StrategyKind, StrategyRollout

if TYPE_CHECKING:
    from aicd.plan import WritePlan

DEFAULT_CANARY_STEPS: list[dict[str, Any]] = [{"setWeight": 100}]


@dataclass(frozen=True)
class CanaryStrategy(StrategyKind):
    canary_steps: list[Step] = field(default_factory=list)
    kind: Literal["canary"] = "canary"

    name: ClassVar[str] = "canary"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["steps"],
        "description": "Canary steps, walked in order for every target, then the promotion.",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/step"},
                "description": "The steps.",
            }
        },
    }
    fleets: ClassVar[bool] = True  # a fleet walks the steps that do not move traffic after each batch

    @classmethod
    def parse(cls, value: Any) -> CanaryStrategy:
        raw = (value or {}).get("steps") or DEFAULT_CANARY_STEPS
        return cls([parse_step(index, step) for index, step in enumerate(raw)])

    @classmethod
    def step_lists(cls, value: Mapping[str, Any]) -> Iterator[tuple[str, list[Any]]]:
        yield "steps", list(value.get("steps") or [])

    @classmethod
    def checks(cls, path: Path, value: Mapping[str, Any], spec: Mapping[str, Any]) -> Iterator[Finding]:
        """Nothing beyond its steps' own checks: as in Argo Rollouts, the promotion follows the last step
        whatever weight it reached (an explicit `setWeight: 100` is allowed)."""
        return iter(())

    def steps(self) -> list[StepKind]:
        return list(self.canary_steps)

    def plan_lines(self, write: WritePlan, artifact_tag: str) -> list[str]:
        from aicd.plan import assignments

        lines = [f"{step.id}: {step.plan_line(write, artifact_tag)}" for step in self.canary_steps]
        return [*lines, f"promote: {assignments(write.promote_values(artifact_tag))}"]

    async def run(self, rollout: StrategyRollout) -> None:
        for step in self.canary_steps:
            await rollout.step(step)
        await rollout.promote()
