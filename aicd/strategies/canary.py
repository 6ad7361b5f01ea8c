"""`strategy: {canary: {steps}}`: the steps in order (weights, pauses, analyses, verification runs, flag
changes), then the promotion: the release becomes stable and the canary stops, in one commit."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from aicd.spec.yamlsafe import Path
from aicd.steps import SetWeightStep, Step, parse_step
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
        steps = value.get("steps") or []
        if steps and not any(step.get(SetWeightStep.name) == 100 for step in steps):
            yield (
                (*path, "steps"),
                "the canary never reaches setWeight 100; add a final `setWeight: 100` step",
            )

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
