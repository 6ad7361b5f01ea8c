"""`pause: 5m` waits (a durable timer whose clock stops while paused); `pause: {}` waits for a human.

Argo Rollouts' forms are accepted as written: `pause: {duration: 10}` (integer seconds, Argo's documented form),
`pause: {duration: "10"}` (seconds as a string) and `pause: {duration: 1h}`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aicd.spec.durations import SECONDS_PATTERN, format_duration, parse_duration
from aicd.steps.base import Rollout, StepKind

# A pause's duration: aicd's `30s`/`5m`/`1h30m`, or Argo Rollouts' integer seconds (`10`, or `"10"`).
PAUSE_DURATION: dict[str, Any] = {
    "description": "How long to wait: a duration (30s, 5m, 1h) or whole seconds (10, as Argo Rollouts writes it).",
    "anyOf": [
        {"$ref": "#/$defs/duration"},
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": SECONDS_PATTERN},
    ],
}


@dataclass(frozen=True)
class PauseStep(StepKind):
    duration_s: float | None  # None: until a human resumes
    kind: Literal["pause"] = "pause"

    name: ClassVar[str] = "pause"
    schema: ClassVar[dict[str, Any]] = {
        "description": "Wait: a duration (5m, a durable timer; or whole seconds, 10, as Argo Rollouts writes"
        " it), {duration: ...} alike, or {} to wait until a human resumes.",
        "oneOf": [
            PAUSE_DURATION,
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "duration": {
                        **PAUSE_DURATION,
                        "description": "How long to wait: a duration (30s, 5m, 1h) or whole seconds (10, as Argo"
                        " Rollouts writes it); without it the step waits until a human resumes.",
                    }
                },
            },
        ],
    }

    @classmethod
    def parse(cls, index: int, value: Any) -> PauseStep:
        duration = value.get("duration") if isinstance(value, dict) else value
        return cls(index, parse_duration(duration) if duration is not None else None)

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
