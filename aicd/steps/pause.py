"""`pause: 5m` waits (a durable timer whose clock stops while paused); `pause: {}` waits for a human."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aicd.spec.durations import format_duration, parse_duration
from aicd.steps.base import Rollout, StepKind


@dataclass(frozen=True)
class PauseStep(StepKind):
    duration_s: float | None  # None: until a human resumes
    kind: Literal["pause"] = "pause"

    name: ClassVar[str] = "pause"
    schema: ClassVar[dict[str, Any]] = {
        "description": "Wait: a duration (5m, a durable timer) or {} to wait until a human resumes.",
        "oneOf": [
            {"$ref": "#/$defs/duration"},
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "duration": {
                        "$ref": "#/$defs/duration",
                        "description": "How long to wait; without it the step waits until a human resumes.",
                    }
                },
            },
        ],
    }

    @classmethod
    def parse(cls, index: int, value: Any) -> PauseStep:
        duration = value if isinstance(value, str) else value.get("duration")
        return cls(index, parse_duration(duration) if duration else None)

    def describe(self) -> str:
        return f"pause {format_duration(self.duration_s)}" if self.duration_s else "pause until resumed"

    @property
    def fixed_wait_s(self) -> float | None:
        return self.duration_s

    async def run(self, rollout: Rollout) -> None:
        if self.duration_s is None:
            await rollout.wait_for_human("waiting at `pause: {}` until a human resumes it")
        else:
            await rollout.sleep(self.duration_s)
