"""Target kinds: one module each (its typed config, schema fragment and checks, see aicd.targets.base),
registered here, the one list of them; each kind but a fleet has its driver in aicd.activities.drivers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias, Union

from aicd.kinds import KindRegistry
from aicd.targets.argocd import ArgoCDTarget
from aicd.targets.base import TargetKind
from aicd.targets.edge import EdgeTarget
from aicd.targets.git import GitTarget
from aicd.targets.local import LocalTarget

TARGET_KINDS: KindRegistry[type[TargetKind]] = KindRegistry(
    "target",
    [
        GitTarget,
        ArgoCDTarget,
        EdgeTarget,
        LocalTarget,
    ],
)

# A target's typed config in a plan: for mypy the base class, for Temporal's converter the union of the
# registered kinds, told apart by their `kind` field.
if TYPE_CHECKING:
    TargetConfig: TypeAlias = TargetKind
else:
    TargetConfig = Union[tuple(TARGET_KINDS)]  # noqa: UP007 - built from the registry at run time


def target_schema() -> dict[str, Any]:
    """The JSON Schema of a target: `kind` first (so a wrong kind is one clear error), then the kind's own
    object, whose unknown keys are errors of that kind."""
    return {
        "type": "object",
        "description": "One place the application runs.",
        "required": ["kind"],
        "properties": {
            "kind": {
                "enum": TARGET_KINDS.names,
                "description": "; ".join(kind.description for kind in TARGET_KINDS) + ".",
            }
        },
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind.name}}, "required": ["kind"]},
                "then": kind.schema(),
            }
            for kind in TARGET_KINDS
        ],
    }


__all__ = [
    "TARGET_KINDS",
    "ArgoCDTarget",
    "EdgeTarget",
    "GitTarget",
    "LocalTarget",
    "TargetConfig",
    "TargetKind",
]
