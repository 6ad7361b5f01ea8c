"""`verify: {name, command | http, ...}`: a verification run against the target (aicd.verification), usable in
a canary's steps and a blue-green's pre- and post-promotion checks. A run that fails all its attempts fails
the step like a failed analysis: the rollout fails and is rolled back per the spec's scope."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aicd.spec.yamlsafe import Path
from aicd.steps.base import Finding, Rollout, StepKind
from aicd.verification import Verification


@dataclass(frozen=True)
class VerifyStep(StepKind):
    run_spec: Verification
    kind: Literal["verify"] = "verify"

    name: ClassVar[str] = "verify"
    schema: ClassVar[dict[str, Any]] = {
        "$ref": "#/$defs/verification",
        "description": "Run a verification (a command or an HTTP check) against the target; failing it fails"
        " the step like a failed analysis.",
    }

    @classmethod
    def parse(cls, index: int, value: Any) -> VerifyStep:
        return cls(index, Verification.parse(value))

    @classmethod
    def checks(cls, occurrences: list[tuple[Path, Any]], spec: Mapping[str, Any]) -> Iterator[Finding]:
        """Names are unique among a stage's verify steps (they name the runs in status and logs)."""
        seen: set[str] = set()
        for path, value in occurrences:
            name = str((value or {}).get("name"))
            if name in seen:
                yield (*path, "name"), f"duplicate verify name {name!r} in this stage"
            seen.add(name)

    def describe(self) -> str:
        return f"verify {self.run_spec.name}"

    def plan_line(self, write: Any, artifact_tag: str) -> str:
        return self.run_spec.describe()

    async def run(self, rollout: Rollout) -> None:
        await rollout.verify(self.id, self.run_spec)
