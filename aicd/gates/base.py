"""What every gate kind shares: the request the gate activity answers, the hold it may return, and the
context through which a kind reads what it needs (the activity implements it; the kinds do no I/O of their
own, so they stay domain code and their tests need no services).

A gate holds a stage before it starts (after its approval gate; and before each wave where a kind says so).
The delivery asks all kinds at once; while any holds, the stage waits on a durable timer until the earliest
`until`/`recheck_s`, an override of that hold by a listed person, or an abort."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from aicd.governance.model import PolicyPlan, SchedulePlan
from aicd.spec.model import PrometheusConfig

# The human action that lets a hold through: a policy deny is overridden, a freeze or a closed window is
# broken by "break-glass". Both need a listed person and a reason, and both are recorded and announced.
OverrideKind = Literal["override", "break-glass"]
OVERRIDE_KINDS: tuple[OverrideKind, ...] = ("override", "break-glass")


@dataclass
class GateHold:
    gate: str  # the kind holding: policy | freeze | window | carbon
    reason: str  # one line for status and Slack ("waiting for window ...", "denied by policy ...")
    override: OverrideKind
    overriders: list[str] = field(default_factory=list)  # who may let it through
    messages: list[str] = field(default_factory=list)  # a policy's deny messages, one each
    until: str | None = None  # ISO time it is expected to lift (a window opens, a freeze ends); None: unknown
    recheck_s: float = 60.0  # ask again after this long at the latest (a fix, an unfreeze, the weather)


@dataclass
class GateRequest:
    delivery_id: str
    app: str
    stage: str
    wave: int | None  # None: before the stage; n: before wave n (1-based)
    at: str  # ISO workflow.now(): the moment the answer is for (time-skipping tests move it)
    held_since: str  # ISO: when this gate first held the stage (carbon-aware waiting gives up after maxDelay)
    gitops_repo: str
    gitops_branch: str
    policy: PolicyPlan | None = None
    schedule: SchedulePlan | None = None
    input_document: dict[str, Any] = field(default_factory=dict)  # the policy's input, but for reports
    skip: list[str] = field(default_factory=list)  # override kinds a person already used on this stage


@dataclass
class GateAnswer:
    holds: list[GateHold] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # a policy's warn messages: shown, never holding


class GateContext(Protocol):
    """What the gate kinds may read (aicd.activities.governance implements it)."""

    async def gitops_files(self, repo: str, branch: str, paths: list[str], suffix: str) -> dict[str, str]:
        """Files at `paths` (files, or directories searched for `suffix`) on the branch; missing: omitted."""
        ...

    async def global_freezes(self) -> list[dict[str, str]]:
        """The freezes on-call set with `aicd freeze` (app glob, actor, reason, since)."""
        ...

    async def reports(self, delivery_id: str) -> dict[str, Any]:
        """JSON reports the delivery's commands left in $AICD_REPORTS_DIR, by file stem."""
        ...

    async def prometheus_value(self, prometheus: PrometheusConfig, query: str) -> float | None: ...

    async def opa_decision(self, url: str, package: str, input_document: dict[str, Any]) -> Any:
        """The document of `data.<package>` from an OPA server's Data API."""
        ...


class GateKind(Protocol):
    name: ClassVar[str]

    def applies(self, request: GateRequest) -> bool: ...

    def plan_lines(
        self, policy: PolicyPlan | None, schedule: SchedulePlan | None, stage: str
    ) -> list[str]: ...

    async def check(self, context: GateContext, request: GateRequest, answer: GateAnswer) -> None:
        """Add this kind's holds (and warnings) for the request to `answer`."""
        ...
