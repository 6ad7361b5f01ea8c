"""What goes in and out of the delivery workflows: inputs, human actions, status. Plain dataclasses that
Temporal's converter carries; the CLI, the gateway and the workflows all speak these."""

from __future__ import annotations

from dataclasses import dataclass, field

from aicd.judge.model import AnalysisVerdict
from aicd.plan import DeliveryPlan

# Phases of a delivery, in the order they usually happen; the last five are terminal.
PHASES = (
    "pending",
    "building",
    "testing",
    "provisioning",
    "awaiting-approval",
    "progressing",
    "paused",
    "rolling-back",
    "succeeded",
    "failed",
    "aborted",
    "rejected",
)
TERMINAL_PHASES = frozenset({"succeeded", "failed", "aborted", "rejected"})

SYSTEM_ACTOR = "aicd"


@dataclass
class Trigger:
    """Who or what started the delivery (webhook, poller, CLI user)."""

    source: str  # cli | github | gitlab | poller | demo
    actor: str = SYSTEM_ACTOR
    branch: str | None = None
    detail: str = ""


@dataclass
class DeliveryInput:
    plan: DeliveryPlan
    trigger: Trigger
    # The time-skipping test server knows no custom search attributes; production always indexes.
    index_search_attributes: bool = True


@dataclass
class HumanAction:
    actor: str
    reason: str = ""
    stage: str | None = None


@dataclass
class ActionRecord:
    kind: str  # pause | resume | abort | approve | reject | approve-inconclusive
    actor: str
    at: str  # ISO time from workflow.now()
    reason: str = ""
    stage: str | None = None


@dataclass
class CommandStatus:
    name: str
    state: str  # pending | running | succeeded | failed
    detail: str = ""


@dataclass
class TargetStatus:
    target: str
    stage: str
    kind: str
    state: str = "pending"  # pending | progressing | paused | awaiting-resume | promoted | failed | aborted | rolled-back
    step_index: int = -1
    step_kind: str = ""
    weight: int = 0
    commits: list[str] = field(default_factory=list)
    last_verdict: AnalysisVerdict | None = None  # the latest look of the current or last analysis step
    message: str = ""
    # Edge fleets summarise instead of listing every site.
    sites_total: int = 0
    sites_by_state: dict[str, int] = field(default_factory=dict)
    failed_sites: list[str] = field(default_factory=list)


@dataclass
class DeliveryStatus:
    delivery_id: str
    app: str
    revision: str
    artifact: str
    phase: str
    stage: str | None = None
    wave: int | None = None
    paused: bool = False
    pause_reason: str = ""
    reason: str = ""  # why it failed / was aborted / rejected
    pending_approval: str | None = None
    approvals: dict[str, list[str]] = field(default_factory=dict)
    commands: list[CommandStatus] = field(default_factory=list)
    targets: dict[str, TargetStatus] = field(default_factory=dict)
    actions: list[ActionRecord] = field(default_factory=list)
    trigger: Trigger | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass
class DeliveryResult:
    delivery_id: str
    phase: str
    reason: str = ""
    commits: list[str] = field(default_factory=list)
