"""`setFlag: {flag, state, defaultVariant, percent, variant}`: change a feature flag in the target's flagd
flag-definition file (the target's `flags`, in the GitOps repository) as one commit; a rollback restores the
file like the target's values file (aicd.flags)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from aicd.flags import FlagChange
from aicd.spec.yamlsafe import Path
from aicd.steps.base import Finding, Rollout, StepKind

if TYPE_CHECKING:
    from aicd.plan import WritePlan


@dataclass(frozen=True)
class SetFlagStep(StepKind):
    change: FlagChange
    kind: Literal["setFlag"] = "setFlag"

    name: ClassVar[str] = "setFlag"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["flag"],
        "anyOf": [{"required": ["state"]}, {"required": ["defaultVariant"]}, {"required": ["percent"]}],
        "dependentRequired": {"percent": ["variant"], "variant": ["percent"]},
        "description": "Change a feature flag in the target's flagd flag-definition file (the target's"
        " `flags`) as one commit: enable or disable it, change its default variant, or roll a variant out to a"
        " percentage of evaluations (flagd's fractional split; the rest get the default variant).",
        "properties": {
            "flag": {"type": "string", "minLength": 1, "description": "The flag's key in the file."},
            "state": {"enum": ["ENABLED", "DISABLED"], "description": "Enable or disable the flag."},
            "defaultVariant": {
                "type": "string",
                "minLength": 1,
                "description": "The variant evaluations get when no targeting rule applies.",
            },
            "percent": {
                "type": "integer",
                "minimum": 0,
                "maximum": 100,
                "description": "The percentage of evaluations that get `variant`.",
            },
            "variant": {
                "type": "string",
                "minLength": 1,
                "description": "With percent: the variant rolled out (not the default variant).",
            },
        },
    }
    # It changes what users get, as a weight does: an edge fleet's sites are promoted whole and skip it (a stage
    # with a fleet target refuses it; aicd.spec.semantic).
    moves_traffic: ClassVar[bool] = True
    waits: ClassVar[bool] = False

    @classmethod
    def parse(cls, index: int, value: Any) -> SetFlagStep:
        return cls(
            index,
            FlagChange(
                flag=value["flag"],
                state=value.get("state"),
                default_variant=value.get("defaultVariant"),
                percent=value.get("percent"),
                variant=value.get("variant"),
            ),
        )

    @classmethod
    def checks(cls, occurrences: list[tuple[Path, Any]], spec: Mapping[str, Any]) -> Iterator[Finding]:
        """A flag's rollout percentage never decreases within a stage (a rollback is how it goes back)."""
        last: dict[str, int] = {}
        for path, value in occurrences:
            flag, percent = value.get("flag"), value.get("percent")
            if percent is None:
                continue
            if percent < last.get(flag, -1):
                yield (
                    (*path, "percent"),
                    f"flag {flag!r} goes to {percent}% after {last[flag]}%; a rollout's percentage never decreases",
                )
            last[flag] = max(percent, last.get(flag, -1))

    def describe(self) -> str:
        return f"setFlag {self.change.describe()}"

    def plan_line(self, write: WritePlan, artifact_tag: str) -> str:
        return f"{self.describe()} (one commit to the target's flags file)"

    async def run(self, rollout: Rollout) -> None:
        await rollout.change_flag(self.id, self.describe(), self.change)
