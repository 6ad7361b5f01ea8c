"""What every canary step kind is (Argo Rollouts' `CanaryStep`, one typed struct per kind; Kargo's promotion
steps, one unit per kind): a frozen dataclass that is its own typed config, parsed once from the spec, with
its JSON Schema fragment, its semantic checks, how it reads in a plan, and its behaviour.

The behaviour is deterministic workflow code written against `Rollout`, which the rollout workflows
implement (aicd.workflows.target_rollout, aicd.workflows.edge_fleet): a step kind never imports workflow or
activity code, so aicd's domain keeps its one-way dependencies."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aicd.spec.yamlsafe import Path

if TYPE_CHECKING:
    from aicd.flags import FlagChange
    from aicd.messages import TargetStatus
    from aicd.plan import WritePlan
    from aicd.steps.analysis import AnalysisStep
    from aicd.verification import Verification

Finding = tuple[Path, str]


class Rollout(Protocol):
    """What a step can do on the target it runs on."""

    status: TargetStatus

    @property
    def write(self) -> WritePlan:
        """The keys a step writes in the target's file."""
        ...

    @property
    def artifact_tag(self) -> str: ...

    async def commit(
        self,
        step_id: str,
        description: str,
        values: Mapping[str, Any],
        copies: Mapping[str, str] | None = None,
    ) -> None:
        """One commit setting `values` in the target's file (and each `copies` key to the value the file held
        at another key before the commit), then the target synced to it and healthy."""
        ...

    async def change_flag(self, step_id: str, description: str, change: FlagChange) -> None:
        """One commit changing a flag in the target's flag-definition file, then the target synced to it."""
        ...

    async def verify(self, step_id: str, run: Verification) -> None:
        """A verification run against the target, with its retries; a failure fails the rollout."""
        ...

    async def sleep(self, seconds: float) -> None:
        """A durable timer whose clock stops while the rollout is paused."""
        ...

    async def wait_for_human(self, why: str) -> None:
        """Wait until a human resumes (an abort ends the rollout)."""
        ...

    async def analyse(self, step: AnalysisStep) -> None:
        """The canary judge's looks over the step's duration; a failure fails the rollout."""
        ...


@dataclass(frozen=True)
class StepKind:
    """Base of the step kinds. Subclasses add their config fields and a `kind: Literal[<name>]` field, which
    tells a plan's steps apart when Temporal decodes them (and matches the plans of older versions)."""

    index: int  # position in the stage's steps

    name: ClassVar[str]  # the step's key in a spec
    schema: ClassVar[dict[str, Any]]  # JSON Schema of the value under that key
    # Whether the step moves traffic between stable and canary: an edge fleet, whose sites are promoted
    # whole (its batches are its canary), skips such steps.
    moves_traffic: ClassVar[bool] = False
    # Whether the step takes time: its start is shown at once (a traffic change shows when it is done).
    waits: ClassVar[bool] = True

    @property
    def id(self) -> str:
        """`<index>-<kind>`, as the step's trailer and status name it."""
        return f"{self.index}-{self.name}"

    @classmethod
    def parse(cls, index: int, value: Any) -> StepKind:
        """The typed step from its value in a spec that passed the schema."""
        raise NotImplementedError

    @classmethod
    def checks(cls, occurrences: list[tuple[Path, Any]], spec: Mapping[str, Any]) -> Iterator[Finding]:
        """Semantic checks of this kind's steps in one stage (path and value of each, in order)."""
        return iter(())

    def describe(self) -> str:
        raise NotImplementedError

    @property
    def fixed_wait_s(self) -> float | None:
        """How long the step waits when that is known in advance (`pause: 5m`): status shows the time left."""
        return None

    def plan_line(self, write: WritePlan, artifact_tag: str) -> str:
        """The step in `aicd plan`: what it does to the target's file, where it writes."""
        return self.describe()

    async def run(self, rollout: Rollout) -> None:
        raise NotImplementedError
