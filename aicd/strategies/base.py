"""What every rollout strategy is (Argo Rollouts' `strategy: {canary | blueGreen}`): a frozen dataclass that is
its own typed config, parsed once from a stage's `strategy`, with its JSON Schema fragment, its semantic
checks, how it reads in a plan, and its walk of one target - deterministic workflow code written against
`StrategyRollout`, which aicd.workflows.target_rollout implements. A stage has one strategy; the target
workflow dispatches on it and never on its kind."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aicd.spec.yamlsafe import Path
from aicd.steps.base import Finding, Rollout, StepKind

if TYPE_CHECKING:
    from aicd.plan import WritePlan


class StrategyRollout(Rollout, Protocol):
    """What a strategy can do on its target, beyond what a step can."""

    async def step(self, step: StepKind) -> None:
        """Walk one step: wait while paused, show it in status, run it, report."""
        ...

    async def enter(self, phase: str, message: str, weight: int | None = None) -> None:
        """Wait while paused, then show the target in `phase` of the strategy (status and report)."""
        ...

    async def promote(self) -> None:
        """The canary's promotion: the release becomes stable, the canary stops (one commit)."""
        ...

    def now(self) -> float:
        """Workflow time in epoch seconds (deterministic)."""
        ...


@dataclass(frozen=True)
class StrategyKind:
    """Base of the strategy kinds. Subclasses add their config fields and a `kind: Literal[<name>]` field,
    which tells a plan's strategies apart when Temporal decodes them."""

    name: ClassVar[str]  # the strategy's key under a stage's `strategy`
    schema: ClassVar[dict[str, Any]]  # JSON Schema of the value under that key
    # Whether a fleet target (rolled out site by site in batches) can run it.
    fleets: ClassVar[bool] = False

    @classmethod
    def parse(cls, value: Any) -> StrategyKind:
        """The typed strategy from its value in a spec that passed the schema."""
        raise NotImplementedError

    @classmethod
    def step_lists(cls, value: Mapping[str, Any]) -> Iterator[tuple[str, list[Any]]]:
        """(key, raw steps) of each list of steps in the strategy's value, in walking order."""
        return iter(())

    @classmethod
    def checks(cls, path: Path, value: Mapping[str, Any], spec: Mapping[str, Any]) -> Iterator[Finding]:
        """Semantic checks of one stage's strategy beyond its steps' own."""
        return iter(())

    def steps(self) -> list[StepKind]:
        """Every step the strategy walks, in order (a step's index is its position here)."""
        raise NotImplementedError

    def plan_lines(self, write: WritePlan, artifact_tag: str) -> list[str]:
        """What the strategy does to one target, for `aicd plan`."""
        raise NotImplementedError

    async def run(self, rollout: StrategyRollout) -> None:
        """Walk one target from the stage's start to its promotion; raise to fail or end it."""
        raise NotImplementedError
