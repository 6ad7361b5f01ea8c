"""`setWeight: N`: send N% of the traffic to the canary, as one commit (canary image and weight)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from aicd.spec.yamlsafe import Path
from aicd.steps.base import Finding, Rollout, StepKind

if TYPE_CHECKING:
    from aicd.plan import WritePlan


@dataclass(frozen=True)
class SetWeightStep(StepKind):
    weight: int
    kind: Literal["setWeight"] = "setWeight"

    name: ClassVar[str] = "setWeight"
    schema: ClassVar[dict[str, Any]] = {
        "type": "integer",
        "minimum": 0,
        "maximum": 100,
        "description": "Send this percentage of traffic to the canary (a commit).",
    }
    moves_traffic: ClassVar[bool] = True
    waits: ClassVar[bool] = False

    @classmethod
    def parse(cls, index: int, value: Any) -> SetWeightStep:
        return cls(index, int(value))

    @classmethod
    def checks(cls, occurrences: list[tuple[Path, Any]], spec: Mapping[str, Any]) -> Iterator[Finding]:
        """Weights never decrease within a stage."""
        last = -1
        for path, weight in occurrences:
            if not 0 <= weight <= 100:
                yield path, f"setWeight {weight} is outside 0..100"
            elif weight < last:
                yield (
                    path,
                    f"setWeight {weight} is lower than the step before ({last}); weights never decrease",
                )
            last = max(last, weight)

    def describe(self) -> str:
        return f"setWeight {self.weight}"

    def plan_line(self, write: WritePlan, artifact_tag: str) -> str:
        from aicd.plan import assignments

        return f"setWeight {self.weight}: {assignments(write.canary_values(artifact_tag, self.weight))}"

    async def run(self, rollout: Rollout) -> None:
        values = rollout.write.canary_values(rollout.artifact_tag, self.weight)
        await rollout.commit(self.id, self.describe(), values)
        rollout.status.weight = self.weight
