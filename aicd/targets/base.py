"""What every target kind is (Kargo's promotion steps, one unit per kind, each with its own schema and a typed
config validated and converted once at the boundary): a frozen dataclass that is the kind's typed config,
parsed once from the spec, with its JSON Schema fragment, its semantic checks and how it reads in a plan.

How a committed state reaches a target of the kind and when it counts as healthy is its driver
(aicd.activities.drivers, looked up by the kind's name): drivers do I/O, so they live with the activities."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from aicd.spec.yamlsafe import Path

Finding = tuple[Path, str]
T = TypeVar("T", bound="TargetKind")

# Keys every target has, whatever its kind (the plan carries them beside the kind's typed config).
COMMON_PROPERTIES: dict[str, Any] = {
    "region": {"type": "string", "description": "Region, shown in status and used in notifications."},
    "path": {
        "$ref": "#/$defs/repoPath",
        "description": "The values file of this target in the GitOps repository; an edge path contains {{ site }}.",
    },
    "flags": {
        "$ref": "#/$defs/repoPath",
        "description": "The target's feature-flag file in the GitOps repository, in flagd's flag-definition"
        " JSON (OpenFeature): what setFlag steps change, one commit each, restored by a rollback.",
    },
    "url": {
        "type": "string",
        "pattern": "^https?://",
        "description": "Where the target serves live traffic: {{ url }} in verification runs (a local"
        " target's comes from the embedded reconciler).",
    },
    "previewUrl": {
        "type": "string",
        "pattern": "^https?://",
        "description": "Where the target serves a blue-green preview: {{ preview.url }} in verification runs.",
    },
    "canaryUrl": {
        "type": "string",
        "pattern": "^https?://",
        "description": "Where the target serves the canary alone: {{ canary.url }} in verification runs.",
    },
    "progressDeadline": {
        "$ref": "#/$defs/duration",
        "description": "How long a sync may take to become healthy before the step fails (default 10m).",
    },
}
COMMON_KEYS = frozenset({"kind", *COMMON_PROPERTIES})


@dataclass(frozen=True)
class TargetKind:
    """Base of the target kinds. Subclasses add their config fields and a `kind: Literal[<name>]` field, which
    tells a plan's targets apart when Temporal decodes them."""

    name: ClassVar[str]  # `kind:` in a spec
    description: ClassVar[str]  # one line for the schema's list of kinds
    properties: ClassVar[dict[str, Any]] = {}  # JSON Schema of the kind's own keys
    required: ClassVar[tuple[str, ...]] = ()
    # Rolled out site by site in batches (an edge fleet's workflow) rather than by canary steps.
    fleet: ClassVar[bool] = False

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The kind's whole target object: the common keys and its own, nothing else."""
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "path", *cls.required],
            "properties": {
                "kind": {"const": cls.name, "description": f"This target is of kind {cls.name}."},
                **COMMON_PROPERTIES,
                **cls.properties,
            },
        }

    @classmethod
    def parse(cls: type[T], raw: Mapping[str, Any]) -> T:
        """The typed config from a target's spec fields (validated by the schema); the common keys are left
        to the plan. Plans of older versions carried these fields as they were written: parsed the same."""
        known = {key: raw[key] for key in cls.properties if key in raw}
        return cls(**cls.convert(known))

    @classmethod
    def convert(cls, fields: dict[str, Any]) -> dict[str, Any]:
        """Spec keys (camelCase) to the dataclass's fields; override to convert values."""
        return fields

    @classmethod
    def checks(cls, raw: Mapping[str, Any], path: Path) -> Iterator[Finding]:
        """Semantic checks of one target of this kind, beyond the schema."""
        return iter(())

    def plan_lines(self) -> list[str]:
        """More lines about the target in `aicd plan`."""
        return []
