"""What goes in and out of the delivery workflows: inputs, human actions, status. Plain dataclasses that
Temporal's converter carries; the CLI, the gateway and the workflows all speak these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from aicd.gates.base import GateHold
from aicd.judge.model import AnalysisVerdict
from aicd.people import SYSTEM_ACTOR, PersonRef, describe
from aicd.plan import DeliveryPlan

# Phases of a delivery, in the order they usually happen; the last five are terminal.
Phase = Literal[
    "pending",
    "building",
    "testing",
    "provisioning",
    "awaiting-approval",
    "held",  # a gate holds the stage: a closed window, a freeze, a policy's deny, the carbon intensity
    "queued",
    "progressing",
    "paused",
    "rolling-back",
    "succeeded",
    "failed",
    "aborted",
    "rejected",
    "superseded",
]
PHASES: tuple[Phase, ...] = get_args(Phase)
TERMINAL_PHASES: frozenset[Phase] = frozenset({"succeeded", "failed", "aborted", "rejected", "superseded"})


def as_phase(value: str, default: Phase | None = None) -> Phase:
    """A phase read from outside the workflow (a search attribute, a history): checked at that boundary;
    an unknown one is `default`, or an error without one."""
    for phase in PHASES:
        if phase == value:
            return phase
    if default is not None:
        return default
    raise ValueError(f"{value!r} is not a delivery phase; one of {', '.join(PHASES)}")


# How a rollout child ended, and every state a target goes through.
RolloutOutcome = Literal["promoted", "failed", "aborted", "superseded"]
TargetState = Literal[
    "pending",
    "progressing",
    "paused",
    "awaiting-resume",
    "promoted",
    "failed",
    "aborted",
    "superseded",
    "rolled-back",
]
# A target in one of these has ended its rollout (the rest are still moving or waiting).
FINAL_TARGET_STATES: frozenset[TargetState] = frozenset(
    {"promoted", "failed", "aborted", "superseded", "rolled-back"}
)
CommandState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
VerificationState = Literal["running", "retrying", "passed", "failed", "cancelled"]

# Signals sent by name where the sender cannot import the receiving workflow: a rollout child reports to its
# parent delivery (the parent imports the child), and the claim activity (activities never import workflows)
# tells other deliveries of the app. The receiving handlers pin these names.
TARGET_PROGRESS_SIGNAL = "target_progress"  # arg: the child's TargetStatus
SUPERSEDED_SIGNAL = "superseded"  # arg: the newer delivery's ID; the receiver stops and ends superseded
NOTIFY_ON_END_SIGNAL = "notify_on_end"  # arg: a queued delivery's ID, told when the receiver ends
PREDECESSOR_ENDED_SIGNAL = "predecessor_ended"  # arg: the ID of an older delivery that has ended


# Workflow type names, pinned in the workflows' definitions: moving or renaming a class never changes them
# (running deliveries and their histories know them by these names). Visibility queries use them too.
DELIVERY_WORKFLOW = "DeliveryWorkflow"
TARGET_ROLLOUT_WORKFLOW = "TargetRolloutWorkflow"
EDGE_FLEET_WORKFLOW = "EdgeFleetWorkflow"


# How a GitOps write's heartbeat starts while the remote refuses its pushes: `aicd status` shows it, since the
# write is retried inside one activity attempt and nothing else says why the step does not move.
PUSH_REFUSED = "the GitOps remote refused the push"


def rollout_workflow_id(delivery_id: str, stage: str, target: str) -> str:
    """The workflow ID of a delivery's rollout child for one target of one stage."""
    return f"{delivery_id}--{stage}--{target}"


# The organisation's freeze button (`aicd freeze`): one workflow holds the freezes and publishes them in its
# memo, which the gate activity reads (activities never import workflows; a memo needs no worker to answer).
FREEZE_BOARD_WORKFLOW = "FreezeBoardWorkflow"
FREEZE_BOARD_ID = "aicd-freezes"
FREEZES_QUERY = "freezes"
FREEZES_MEMO = "freezes"


@dataclass
class Trigger:
    """Who or what started the delivery (webhook, poller, CLI user)."""

    source: str  # cli | github | gitlab | poller | demo
    actor: str = SYSTEM_ACTOR
    branch: str | None = None
    detail: str = ""
    # The identity of the triggering event (a push: branch, before, after), so the same event delivered
    # twice starts one delivery; empty for a human's request (CLI), which finds a running delivery of the
    # same revision or starts a new one (a re-deploy).
    event: str = ""


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
    via: str = (
        ""  # where the person acted: cli | slack | dashboard | gateway (the audit trail's "from where")
    )


@dataclass
class ActionRecord:
    kind: str  # pause | resume | abort | approve | reject | override | break-glass | human-edit | superseded
    actor: str
    at: str  # ISO time from workflow.now()
    reason: str = ""
    stage: str | None = None
    via: str = ""  # cli | slack | dashboard | gateway; empty for aicd itself and older records
    # The spec's person the actor is (aicd.people); empty when no person declares the identity.
    person: str = ""

    def who(self) -> str:
        """The person and the identity they acted as (`alice (as U0ALICE via slack)`), or the identity."""
        person = PersonRef(self.person, declared=True) if self.person else PersonRef(self.actor)
        return describe(person, self.actor, self.via)


@dataclass
class CommandStatus:
    name: str
    state: CommandState
    detail: str = ""  # how long it took, or why it failed (with the output's masked tail)
    log: str = ""  # host:path of the whole (masked) output on the worker that ran it


@dataclass
class VerificationStatus:
    """One verification run (aicd.verification) as it stands: a `verify` step of a target, or a stage's
    `verify:` run after its targets are promoted."""

    name: str
    step: str  # the step's id (`2-verify`), or `stage` for a stage-level run
    state: VerificationState
    attempts: int = 0  # attempts made so far
    max_attempts: int = 1
    detail: str = ""  # the last attempt's result: status and body match, or exit code; why it failed
    output_tail: str = ""  # the last attempt's output (a command's, or a response body's start), masked
    log: str = ""  # host:path of a command's whole (masked) output on the worker that ran it
    target: str = ""  # a stage-level run naming a target runs once per target


@dataclass
class TargetStatus:
    target: str
    stage: str
    kind: str
    state: TargetState = "pending"
    step_index: int = -1
    step_kind: str = ""
    weight: int = 0
    commits: list[str] = field(default_factory=list)
    last_verdict: AnalysisVerdict | None = None  # the latest look of the current or last analysis step
    message: str = ""
    # ISO time a timed wait (`pause: 5m`) ends, while one runs; its clock stops while the delivery is paused.
    wait_until: str = ""
    # Edge fleets summarise instead of listing every site.
    sites_total: int = 0
    sites_by_state: dict[str, int] = field(default_factory=dict)
    failed_sites: list[str] = field(default_factory=list)
    # A human's commit changed the target's file since this delivery wrote it: sha, author, subject.
    human_edit: dict[str, str] | None = None
    verifications: list[VerificationStatus] = field(default_factory=list)  # its `verify` steps
    urls: dict[str, str] = field(default_factory=dict)  # placeholder (url, preview.url, ...) -> URL
    strategy: str = ""  # a stage's strategy other than a canary (blueGreen): step_kind names its phase
    flags: dict[str, str] = field(default_factory=dict)  # flag -> what its last setFlag step made it
    # Earlier stages that promoted this target and whose release this delivery has not rolled back since: a
    # later stage that ends aborted or superseded leaves that release standing (rollback.scope stage/target).
    promoted_in: list[str] = field(default_factory=list)


def target_state_text(target: TargetStatus) -> str:
    """The target's state, and the earlier stages whose release of it stands: `aborted (promoted in canary)`."""
    if target.promoted_in and target.state != "promoted":
        return f"{target.state} (promoted in {', '.join(target.promoted_in)})"
    return target.state


@dataclass
class LaterCommit:
    """A commit on the GitOps branch, after a delivery's last write to a target, that changed the target's files:
    what runs there now is that commit's, not the delivery's."""

    sha: str
    author: str
    subject: str
    delivery_id: str = ""  # the delivery that made it ("" for a person's commit)


@dataclass
class DeliveryStatus:
    delivery_id: str
    app: str
    revision: str
    artifact: str
    phase: Phase
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
    started: str = ""  # ISO time the delivery started; "newer" deliveries of an app started later
    superseded_by: str | None = None  # the newer delivery that replaced this one
    waiting_for: list[str] = field(default_factory=list)  # queued: the older deliveries it waits for
    holds: list[GateHold] = field(default_factory=list)  # what holds the current stage (phase held)
    warnings: list[str] = field(default_factory=list)  # a policy's warn messages for the current stage
    # Each stage's `verify:` runs, after every target of the stage is promoted (stage -> runs).
    verifications: dict[str, list[VerificationStatus]] = field(default_factory=dict)
    # Every target in delivery order (stage by stage, wave by wave): Temporal's JSON sorts `targets` by name.
    target_order: list[str] = field(default_factory=list)
    # What is being retried now, and why (a failed attempt, a push the remote refuses): read by the client
    # from Temporal's pending activities, never set by the workflow.
    retrying: list[str] = field(default_factory=list)
    # The delivery's commits that its GitOps branch no longer holds (someone rewrote the branch since): read
    # by the client from the GitOps repository (aicd.client.read_branch_since), never set by the workflow.
    off_branch: list[str] = field(default_factory=list)
    # Per target, the later commits on the branch that changed the files the delivery wrote (newest first): read
    # by the client from the GitOps repository (aicd.client.read_branch_since).
    changed_since: dict[str, list[LaterCommit]] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def commits(self) -> list[str]:
        """Every commit the delivery reported, target by target."""
        return [sha for target in self.targets.values() for sha in target.commits]

    def approved_by(self, stage: str) -> list[str]:
        """Who approved `stage`, as views show them: the person and the identity they used (`alice (as
        U0ALICE via slack)`), or the identity where no person declares it (aicd.people)."""
        records = {
            record.actor: record
            for record in self.actions
            if record.kind == "approve" and record.stage == stage
        }
        return [
            records[actor].who() if actor in records else actor for actor in self.approvals.get(stage, [])
        ]

    def in_delivery_order(self) -> DeliveryStatus:
        """This status with `targets` in delivery order (production after staging), whatever order the
        query's JSON left them in; targets the order does not name (a status from an older worker) follow
        by name."""
        rank = {name: index for index, name in enumerate(self.target_order)}
        names = sorted(self.targets, key=lambda name: (rank.get(name, len(rank)), name))
        self.targets = {name: self.targets[name] for name in names}
        return self


@dataclass
class DeliveryResult:
    delivery_id: str
    phase: Phase
    reason: str = ""
    commits: list[str] = field(default_factory=list)
