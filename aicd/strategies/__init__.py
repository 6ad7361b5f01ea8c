"""Rollout strategies (a stage's `strategy`): one module each (its typed config, schema fragment, checks, plan
lines and walk of one target, see aicd.strategies.base), registered here, the one list of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aicd.kinds import KindRegistry
from aicd.strategies.base import StrategyKind, StrategyRollout
from aicd.strategies.blue_green import BlueGreenStrategy
from aicd.strategies.canary import CanaryStrategy

STRATEGY_KINDS: KindRegistry[type[StrategyKind]] = KindRegistry(
    "strategy", [CanaryStrategy, BlueGreenStrategy]
)


def parse_strategy(raw: Mapping[str, Any] | None) -> StrategyKind:
    """A validated stage's strategy (no `strategy`: a canary straight to full weight)."""
    if not raw:
        return CanaryStrategy.parse(None)
    (name, value), *_ = raw.items()
    return STRATEGY_KINDS[name].parse(value)


def strategy_schema() -> dict[str, Any]:
    """The JSON Schema of a stage's `strategy`: at most one kind's key, its value per that kind's fragment."""
    return {
        "type": "object",
        "additionalProperties": False,
        "maxProperties": 1,
        "description": f"How each target of the stage changes over: one of {', '.join(STRATEGY_KINDS.names)}"
        " (Argo Rollouts' words); without it, a canary straight to full weight.",
        "properties": {kind.name: kind.schema for kind in STRATEGY_KINDS},
    }


__all__ = [
    "STRATEGY_KINDS",
    "BlueGreenStrategy",
    "CanaryStrategy",
    "StrategyKind",
    "StrategyRollout",
    "parse_strategy",
    "strategy_schema",
]
