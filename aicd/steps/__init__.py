"""Canary step kinds: one module each (its typed config, schema fragment, checks and behaviour, see
aicd.steps.base), registered here, the one list of them. Adding a step kind is a module and a line below."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, Union

from aicd.kinds import KindRegistry
from aicd.steps.analysis import AnalysisStep
from aicd.steps.base import Rollout, StepKind
from aicd.steps.pause import PauseStep
from aicd.steps.set_weight import SetWeightStep
from aicd.steps.unsupported import unsupported_step_schemas

STEP_KINDS: KindRegistry[type[StepKind]] = KindRegistry(
    "step",
    [
        SetWeightStep,
        PauseStep,
        AnalysisStep,
    ],
)

# A step in a plan: for mypy the base class (steps are used through it); for Temporal's converter the union
# of the registered kinds, told apart by their `kind` field.
if TYPE_CHECKING:
    Step: TypeAlias = StepKind
else:
    Step = Union[tuple(STEP_KINDS)]  # noqa: UP007 - built from the registry at run time


def parse_step(index: int, raw: Mapping[str, Any]) -> StepKind:
    """A step of a validated spec (a mapping with exactly one kind's key)."""
    (name, value), *_ = raw.items()
    return STEP_KINDS[name].parse(index, value)


def step_schema() -> dict[str, Any]:
    """The JSON Schema of a step: exactly one kind's key, its value per that kind's fragment. Argo Rollouts'
    steps that aicd lacks are listed too, matching nothing, so each is refused by name (aicd.steps.unsupported)."""
    return {
        "type": "object",
        "description": f"One canary step: {', '.join(STEP_KINDS.names)} (Argo Rollouts' vocabulary).",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": False,
        "properties": {**{kind.name: kind.schema for kind in STEP_KINDS}, **unsupported_step_schemas()},
    }


__all__ = [
    "STEP_KINDS",
    "AnalysisStep",
    "PauseStep",
    "Rollout",
    "SetWeightStep",
    "Step",
    "StepKind",
    "parse_step",
]
