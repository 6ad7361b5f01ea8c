"""DeliveryWorkflow: one per (app, revision). Build -> tests (in parallel) -> provision -> for each stage:
approval gate -> waves in order (targets of a wave in parallel, each a TargetRolloutWorkflow child) -> next
stage. On-call and approvers steer it through updates whose validators refuse what makes no sense, so the
caller learns at once; `status` tells everything a human needs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from aicd import fleet, search
    from aicd.activities.audit import AuditActivities
    from aicd.activities.commands import CommandActivities, CommandRequest, CommandResult
    from aicd.activities.drivers.base import SyncRequest
    from aicd.activities.gitops import GitOpsActivities, RollbackRequest
    from aicd.activities.governance import GovernanceActivities
    from aicd.activities.incidents import IncidentActivities, IncidentEvent, IncidentRequest
    from aicd.activities.notify import NotifyEvent, NotifyRequest, SlackMessage, notify
    from aicd.activities.releases import ClaimRequest, ReleaseActivities
    from aicd.activities.sync import sync_target
    from aicd.fleet import MovedSites
    from aicd.gates import GateAnswer, GateHold, GateRequest, OverrideKind
    from aicd.governance.audit import AuditEntry
    from aicd.messages import (
        DELIVERY_WORKFLOW,
        NOTIFY_ON_END_SIGNAL,
        PREDECESSOR_ENDED_SIGNAL,
        SUPERSEDED_SIGNAL,
        SYSTEM_ACTOR,
        TARGET_PROGRESS_SIGNAL,
        TERMINAL_PHASES,
        ActionRecord,
        CommandStatus,
        DeliveryInput,
        DeliveryResult,
        DeliveryStatus,
        HumanAction,
        Phase,
        TargetStatus,
        VerificationStatus,
        rollout_workflow_id,
    )
    from aicd.people import PersonRef, Roster, acting_identity_problem, describe, resolve
    from aicd.plan import CommandPlan, DeliveryPlan, StagePlan
    from aicd.slack_blocks import approval_info, compact_status, describe_progress
    from aicd.spec.durations import format_duration
    from aicd.targets import TARGET_KINDS
    from aicd.trailers import delivery_trailer, step_trailer
    from aicd.verification import target_urls
    from aicd.workflows.common import (
        AUDIT_RETRY,
        AUDIT_TIMEOUT,
        CLAIM_RETRY,
        CLAIM_TIMEOUT,
        COMMAND_HEARTBEAT,
        COMMAND_RETRY,
        GATE_RETRY,
        GATE_TIMEOUT,
        GIT_HEARTBEAT,
        GIT_RETRY,
        GIT_TIMEOUT,
        HOST_WAIT,
        INCIDENT_RETRY,
        INCIDENT_TIMEOUT,
        NOTIFY_RETRY,
        NOTIFY_TIMEOUT,
        SYNC_HEARTBEAT,
        SYNC_RETRY,
        cause_of,
        never_started,
        on_writer_queue,
        settle,
    )
    from aicd.workflows.edge_batch import FleetStop, fleet_of, read_fleet, sync_sites
    from aicd.workflows.edge_fleet import EdgeFleetWorkflow, FleetInput
    from aicd.workflows.notifications import ProgressKey, progress_changes
    from aicd.workflows.rollout_control import RolloutControl, TargetRolloutInput, TargetRolloutResult
    from aicd.workflows.target_rollout import TargetRolloutWorkflow
    from aicd.workflows.verification import VerificationContext, run_verification

T = TypeVar("T")
# The rollout children's signals (pause, resume, abort), by method.
ChildSignal = Callable[[RolloutControl, HumanAction], None]
# A delivery stopped (aborted, superseded) while a wave was starting its rollouts starts no more of them and
# tells the one being started; before, those started after the stop were told nothing and ran to the end.
STOP_LATE_ROLLOUTS = "stop-rollouts-started-late"
# Likewise a pause or a resume accepted while a wave was starting reaches the rollout being started.
PAUSE_LATE_ROLLOUTS = "pause-rollouts-started-late"
# The rollback of an argocd fleet syncs the sites the fleet moved to the rollback commit; before, it only
# committed, and those sites kept running the release their Applications were last synced to.
SYNC_FLEET_BACK = "sync-fleet-back"
# The rollback of an argocd fleet whose rollout ended without a result (terminated, timed out, or failed before
# edge_fleet.FAILURE_IN_RESULT) syncs every site of the fleet to the rollback commit: which ones it moved is not
# known, and one it never moved is already on what that commit gives it. Before, it synced none.
SYNC_FLEET_WITHOUT_RESULT = "sync-fleet-without-result"

# Workflow patch: the audit stream's batches and the release claim go as local activities (_send_audit,
# _claim_app): short calls the worker running the workflow task makes within it, at no activity task's cost.
LOCAL_ACTIVITIES = "local-audit-and-claim"
LOCAL_AUDIT_ATTEMPT = timedelta(seconds=10)
LOCAL_AUDIT_RETRY_THRESHOLD = timedelta(seconds=3)
# Workflow patch: the end waits for the last audit batch itself, not for a timer raced against it. Live, the
# batch (a local activity) may still run when the wait starts, so the timer is started; on replay its result
# is known at once and the timer never is: the finished delivery's history did not replay (nondeterminism).
AUDIT_DRAIN_WITHOUT_TIMER = "audit-drain-without-timer"

# A queued delivery looks whether the deliveries it waits for still run this often (their end notice is the
# fast path; this is the net for one that never comes, e.g. a delivery terminated by an operator).
QUEUE_RECHECK = timedelta(seconds=30)
# Workflow patch: a superseding delivery waits for the deliveries it supersedes to withdraw their canaries
# before its first write (_wait_for_ended), at most the plan's supersede_wait_s. Before, it wrote at once, and an edge
# fleet's batch could land first: the older's withdrawal then left those sites (a newer delivery's files) and
# this delivery's own rollback restored them to the older release, which nobody delivers any more.
SUPERSEDE_WAITS = "supersede-waits-for-withdrawal"
SUPERSEDE_RECHECK = timedelta(seconds=5)
# Workflow patch: what an abort gives up on is cancelled and settled before the delivery goes on (_abortable),
# and a failed test cancels the tests still running. Before, an abort during the tests cancelled their gather
# but not their command activities (the outer wait woke first), and a failed test left its siblings running:
# their commands ran on, on a delivery already ended, until a heartbeat found it closed.
SETTLE_ABANDONED = "settle-abandoned-activities"


class DeliveryStopped(Exception):
    """Ends the delivery early with a terminal phase and a reason."""

    def __init__(self, phase: Phase, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


@workflow.defn(name=DELIVERY_WORKFLOW)
class DeliveryWorkflow:
    @workflow.init
    def __init__(self, input: DeliveryInput) -> None:
        plan = input.plan
        self.plan: DeliveryPlan = plan
        self.input = input
        self.status = DeliveryStatus(
            delivery_id=plan.delivery_id,
            app=plan.app,
            revision=plan.revision,
            artifact=plan.artifact,
            phase="pending",
            trigger=input.trigger,
            started=workflow.info().workflow_start_time.isoformat(),
            target_order=list(dict.fromkeys(name for stage in plan.stages for name in stage.targets)),
        )
        self.phase_before_pause: Phase = "pending"
        self.abort_action: HumanAction | None = None
        self.control_action: HumanAction | None = None  # the last pause or resume, to tell a late rollout
        # Overlapping releases of the app (spec.concurrency): claimed once, before the first GitOps write.
        self.claimed = False
        self.waiters: list[str] = []  # queued newer deliveries to tell when this one ends
        self.rejection: HumanAction | None = None
        # Who approved each stage, one entry per person (aicd.people): the gate counts these, so a person
        # approving from Slack and from the dashboard counts once.
        self.approved: dict[str, dict[PersonRef, HumanAction]] = {}
        # Gates (aicd.gates) a listed person let through, per stage: "override" (a policy's deny),
        # "break-glass" (a freeze, a closed window, the carbon wait).
        self.overrides: dict[str, list[str]] = {}
        self.incidents: list[asyncio.Task[None]] = []  # incident hooks in flight (never awaited by the steps)
        # The audit stream (aicd.governance.audit): entries waiting for the one sender, and their count.
        self.audit_outbox: list[AuditEntry] = []
        self.audit_sender: list[asyncio.Task[None]] = []
        self.audit_seq = 0
        self.audited_phase = ""
        self.children: dict[str, workflow.ChildWorkflowHandle[Any, TargetRolloutResult]] = {}
        # Per target in more than one stage, the commits of its rollouts in the stages before the current one:
        # its status and the delivery's result list them too.
        self.earlier_commits: dict[str, list[str]] = {}
        # Per target, the ownership base of each file its rollouts wrote, for its rollout in a later stage.
        self.file_bases: dict[str, dict[str, str]] = {}
        self.started_targets: list[tuple[str, str]] = []  # (stage, target) in start order
        # Per edge fleet, the sites each of its rollouts moved (from their results): what a rollback syncs back.
        self.moved_sites: dict[str, list[MovedSites]] = {}
        self.fleets_without_result: set[str] = set()  # edge fleets one of whose rollouts ended with no result
        # Slack: the one sender task, events waiting for it, the delivery's message once posted (kept here so
        # it survives worker restarts), and the last progress of each target that was reported.
        self.notifications: list[asyncio.Task[None]] = []
        self.slack_outbox: list[NotifyEvent] = []
        self.slack_message: SlackMessage | None = None
        self.slack_progress: dict[str, ProgressKey] = {}
        # The worker holding this delivery's source checkout and the reports its commands wrote (the queue
        # only it serves, from the first command's result); `host_lost` says why that worker was given up.
        self.host_queue: str | None = None
        self.host_lost = ""

    # --- queries and updates ----------------------------------------------------------------------
    @workflow.query(name="status_query")
    def status_query(self) -> DeliveryStatus:
        return self.status

    @workflow.signal(name=TARGET_PROGRESS_SIGNAL)
    def target_progress(self, progress: TargetStatus) -> None:
        self._take_progress(progress)

    def _take_progress(self, progress: TargetStatus) -> None:
        """A target's status from its rollout child: a progress signal, or the final status in its result."""
        previous = self.status.targets.get(progress.target)
        edit = progress.human_edit
        if edit and (previous is None or previous.human_edit != edit):
            # The action log shows whose commit stopped the delivery (they acted in Git, not through aicd).
            reason = f'{progress.target}: commit {edit["sha"][:7]} "{edit["subject"]}"'
            self.status.actions.append(
                ActionRecord("human-edit", edit["author"], workflow.now().isoformat(), reason, progress.stage)
            )
        earlier = self.earlier_commits.get(progress.target, [])
        if earlier:  # the rollout reports this stage's commits; the target's status holds every stage's
            progress.commits = earlier + [sha for sha in progress.commits if sha not in earlier]
        if previous is not None:  # the rollout knows nothing of earlier stages (TargetStatus.promoted_in)
            progress.promoted_in = list(previous.promoted_in)
        self.status.targets[progress.target] = progress
        self._reflect_waiting()

    # --- overlapping releases of the app ----------------------------------------------------------
    # A delivery that ends while this handler still tells its rollouts to stop has no rollout left to tell: it
    # ends after they do, and its end would terminate any still running (the default parent close policy).
    @workflow.signal(name=SUPERSEDED_SIGNAL, unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def superseded(self, by: str) -> None:
        """A newer delivery of the app is about to write: stop at the next step boundary, withdraw the canaries
        in progress, end superseded."""
        if self.status.phase in TERMINAL_PHASES or self.status.superseded_by is not None:
            return
        self.status.superseded_by = by
        self.status.actions.append(
            ActionRecord("superseded", by, workflow.now().isoformat(), f"superseded by {by}")
        )
        await self._signal_children(RolloutControl.abort, HumanAction(SYSTEM_ACTOR, f"superseded by {by}"))

    @workflow.signal(name=NOTIFY_ON_END_SIGNAL)
    def notify_on_end(self, waiter: str) -> None:
        if waiter not in self.waiters:
            self.waiters.append(waiter)

    @workflow.signal(name=PREDECESSOR_ENDED_SIGNAL)
    def predecessor_ended(self, ended: str) -> None:
        if ended in self.status.waiting_for:
            self.status.waiting_for.remove(ended)

    def _stopping(self) -> bool:
        return self.abort_action is not None or self.status.superseded_by is not None

    def _stop_action(self) -> HumanAction:
        """What the rollouts are told when the delivery stops: the abort, or the newer delivery's claim."""
        if self.abort_action is not None:
            return self.abort_action
        return HumanAction(SYSTEM_ACTOR, f"superseded by {self.status.superseded_by}")

    def _reflect_waiting(self) -> None:
        """A target waiting for a human (`pause: {}`, an inconclusive analysis) shows the delivery as paused
        with the reason; a resume while not paused releases it."""
        waiting = [t for t in self.status.targets.values() if t.state == "awaiting-resume"]
        if waiting and self.status.phase == "progressing":
            self.status.pause_reason = "; ".join(f"{t.target}: {t.message}" for t in waiting)
            self._set_phase("paused")
        elif not waiting and self.status.phase == "paused" and not self.status.paused:
            self.status.pause_reason = ""
            self._set_phase("progressing")

    def _person(self, action: HumanAction) -> PersonRef:
        return resolve(self.plan.people, action.actor, action.via)

    def _who(self, action: HumanAction) -> str:
        """Who acted, as messages and the `Aicd-Actor` trailer of the commits the action caused name them:
        `alice (as U0ALICE via slack)`, or the identity itself where no person declares it."""
        return describe(self._person(action), action.actor, action.via)

    def _for_rollouts(self, action: HumanAction) -> HumanAction:
        """`action` as the rollout children are told it: they know no people, and write its actor into the
        trailer of the commit a resume causes (and name it in their messages), so it comes named."""
        return dataclasses.replace(action, actor=self._who(action))

    def _record(self, kind: str, action: HumanAction, stage: str | None = None) -> None:
        person = self._person(action)
        record = ActionRecord(
            kind,
            action.actor,
            workflow.now().isoformat(),
            action.reason,
            stage or action.stage,
            action.via,
            person.name if person.declared else "",
        )
        self.status.actions.append(record)
        self._audit(
            "action",
            {
                "kind": kind,
                "actor": action.actor,
                "reason": action.reason,
                "stage": self.status.stage,
                "via": action.via,
                # Only when the spec declares the person: audit entries of other deliveries stay as they were.
                **({"person": person.name} if person.declared else {}),
            },
        )

    def _refuse_unnamed(self, action: HumanAction) -> None:
        """An actor must be one identity it may act as (aicd.people.acting_identity_problem): it is written into
        the `Aicd-Actor` trailer, where a line break would end the trailers aicd's ownership checks read, and
        neither aicd's own name nor another channel's Slack user ID may be recorded as who acted."""
        if problem := acting_identity_problem(action.actor, action.via):
            raise ValueError(f"actor {action.actor!r} via {action.via!r} refused: {problem}")

    def _refuse_when_finished(self) -> None:
        if self.status.phase in TERMINAL_PHASES:
            raise ValueError(f"delivery {self.plan.delivery_id} has already ended ({self.status.phase})")

    @workflow.update(name="pause")
    async def pause(self, action: HumanAction) -> str:
        self._record("pause", action)
        self.control_action = action
        self.status.paused = True
        self.status.pause_reason = action.reason
        self.phase_before_pause = self.status.phase
        self._set_phase("paused")
        await self._signal_children(RolloutControl.pause, self._for_rollouts(action))
        self._notify("paused", f"paused by {self._who(action)}: {action.reason}")
        return f"paused {self.plan.delivery_id}"

    @pause.validator
    def _validate_pause(self, action: HumanAction) -> None:
        self._refuse_unnamed(action)
        self._refuse_when_finished()
        if self.status.paused:
            raise ValueError(f"delivery {self.plan.delivery_id} is already paused")
        if self.abort_action is not None:
            raise ValueError(f"delivery {self.plan.delivery_id} is being aborted")

    @workflow.update(name="resume")
    async def resume(self, action: HumanAction) -> str:
        self._record("resume", action)
        self.control_action = action
        was_paused = self.status.paused
        self.status.paused = False
        self.status.pause_reason = ""
        if was_paused:
            self._set_phase(self.phase_before_pause)
            self._reflect_waiting()
        await self._signal_children(RolloutControl.resume, self._for_rollouts(action))
        self._notify("resumed", f"resumed by {self._who(action)}")
        return f"resumed {self.plan.delivery_id}"

    @resume.validator
    def _validate_resume(self, action: HumanAction) -> None:
        self._refuse_unnamed(action)
        self._refuse_when_finished()
        waiting = [t.target for t in self.status.targets.values() if t.state == "awaiting-resume"]
        if not self.status.paused and not waiting:
            raise ValueError(f"delivery {self.plan.delivery_id} is not paused and no step waits for a human")

    @workflow.update(name="abort")
    async def abort(self, action: HumanAction) -> str:
        self._record("abort", action)
        self.abort_action = action
        await self._signal_children(RolloutControl.abort, self._for_rollouts(action))
        return f"aborting {self.plan.delivery_id}"

    @abort.validator
    def _validate_abort(self, action: HumanAction) -> None:
        self._refuse_unnamed(action)
        self._refuse_when_finished()
        if self.abort_action is not None:
            raise ValueError(f"delivery {self.plan.delivery_id} is already being aborted")

    @workflow.update(name="approve")
    def approve(self, action: HumanAction) -> str:
        stage = self._gate_stage(action)
        self._record("approve", action, stage.name)
        self.status.approvals.setdefault(stage.name, []).append(action.actor)
        approved = self.approved.setdefault(stage.name, {})
        approved[self._person(action)] = action
        assert stage.approval is not None
        return f"approved {stage.name} ({len(approved)}/{stage.approval.min_approvals})"

    @approve.validator
    def _validate_approve(self, action: HumanAction) -> None:
        self._refuse_unnamed(action)
        stage = self._gate_stage(action)
        earlier = self.approved.get(stage.name, {}).get(self._person(action))
        if earlier is not None:
            raise ValueError(
                f"{self._who(earlier)} already approved stage {stage.name}; each person counts once"
            )

    @workflow.update(name="reject")
    def reject(self, action: HumanAction) -> str:
        stage = self._gate_stage(action)
        self._record("reject", action, stage.name)
        self.rejection = action
        return f"rejected {stage.name}"

    @reject.validator
    def _validate_reject(self, action: HumanAction) -> None:
        self._refuse_unnamed(action)
        self._gate_stage(action)

    @workflow.update(name="override")
    def override(self, action: HumanAction) -> str:
        return self._let_through("override", action)

    @override.validator
    def _validate_override(self, action: HumanAction) -> None:
        self._refuse_unnamed(action)
        self._holds_for("override", action)

    @workflow.update(name="break_glass")
    def break_glass(self, action: HumanAction) -> str:
        return self._let_through("break-glass", action)

    @break_glass.validator
    def _validate_break_glass(self, action: HumanAction) -> None:
        self._refuse_unnamed(action)
        self._holds_for("break-glass", action)

    def _holds_for(self, kind: OverrideKind, action: HumanAction) -> list[GateHold]:
        """The holds of the current stage that `kind` lets through, checked against the action."""
        self._refuse_when_finished()
        stage = self.status.stage
        holds = [hold for hold in self.status.holds if hold.override == kind]
        if stage is None or not holds:
            held = "; ".join(f"{hold.gate} ({hold.override})" for hold in self.status.holds) or "nothing"
            raise ValueError(
                f"delivery {self.plan.delivery_id}: no hold that {kind} lets through (held by {held})"
            )
        if action.stage and action.stage != stage:
            raise ValueError(f"stage {action.stage} is not held (held: {stage})")
        allowed = sorted({who for hold in holds for who in hold.overriders})
        if not Roster.of(self.plan.people, allowed).admits(action.actor, action.via):
            raise ValueError(
                f"{self._who(action)} may not {kind} stage {stage} (listed: {', '.join(allowed) or 'nobody'})"
            )
        if not action.reason.strip():
            raise ValueError(f"{kind} needs a reason; it is recorded and announced")
        return holds

    def _let_through(self, kind: OverrideKind, action: HumanAction) -> str:
        holds = self._holds_for(kind, action)
        stage = self.status.stage
        assert stage is not None
        self._record(kind, action, stage)
        self.overrides.setdefault(stage, []).append(kind)
        what = "; ".join(hold.reason for hold in holds)
        self._notify(kind, f"{self._who(action)} let stage {stage} through ({what}): {action.reason}")
        return f"{kind}: stage {stage} goes on"

    def _gate_stage(self, action: HumanAction) -> StagePlan:
        """The stage whose gate is pending, checked against the action; raises what the caller is told."""
        self._refuse_when_finished()
        pending = self.status.pending_approval
        if pending is None:
            raise ValueError(f"delivery {self.plan.delivery_id} has no approval pending")
        if action.stage and action.stage != pending:
            raise ValueError(f"stage {action.stage} is not awaiting approval (pending: {pending})")
        stage = self.plan.stage(pending)
        assert stage.approval is not None
        if not Roster.of(self.plan.people, stage.approval.approvers).admits(action.actor, action.via):
            raise ValueError(f"{self._who(action)} is not an approver of stage {pending}")
        if self.rejection is not None:
            raise ValueError(f"stage {pending} was already rejected by {self._who(self.rejection)}")
        return stage

    # --- the delivery -----------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: DeliveryInput) -> DeliveryResult:
        self._notify("started", f"triggered by {input.trigger.actor} ({input.trigger.source})")
        trigger = input.trigger
        self._audit(
            "started",
            {
                "trigger": {"source": trigger.source, "actor": trigger.actor, "branch": trigger.branch},
                "revision": self.plan.revision,
                "artifact": self.plan.artifact,
            },
        )
        try:
            await self._commands()
            for stage in self.plan.stages:
                await self._stage(stage)
            self._set_phase("succeeded")
        except DeliveryStopped as stop:
            self.status.reason = stop.reason
            self._set_phase(stop.phase)
        await self._tell_waiters()
        self._notify("finished", self.status.reason)
        self._audit("finished", {"phase": self.status.phase, "reason": self.status.reason})
        if self.status.phase in ("failed", "aborted", "succeeded"):
            self._incident(self.status.phase, self.status.reason or f"delivery {self.status.phase}")
        await self._drain_notifications()
        return DeliveryResult(
            self.plan.delivery_id, self.status.phase, self.status.reason, self.status.commits()
        )

    async def _commands(self) -> None:
        plan = self.plan
        if plan.build:
            await self._wait_unpaused()
            self._set_phase("building")
            await self._run_command(plan.build)
        if plan.tests:
            await self._wait_unpaused()
            self._set_phase("testing")
            runs = [asyncio.ensure_future(self._run_command(test)) for test in plan.tests]
            try:
                await self._abortable(asyncio.gather(*runs))
            except DeliveryStopped:
                if workflow.patched(SETTLE_ABANDONED):  # read at the first _abortable: before any cancel
                    for run in runs:
                        await settle(run)
                raise
        for step in plan.provision:
            await self._wait_unpaused()
            self._set_phase("provisioning")
            await self._run_command(step)

    async def _run_command(self, command: CommandPlan) -> None:
        state = CommandStatus(command.name, "running")
        self.status.commands.append(state)
        request = CommandRequest(
            delivery_id=self.plan.delivery_id,
            name=command.name,
            argv=command.argv,
            timeout_s=command.timeout_s,
            source_repo=self.plan.source_repo,
            revision=self.plan.revision,
            artifact=self.plan.artifact,
            env=dict(command.env),
            secret_env=list(command.secret_env),
        )
        try:
            result: CommandResult = await self._abortable(
                self._on_host(
                    CommandActivities.run_command,
                    request,
                    start_to_close_timeout=timedelta(seconds=command.timeout_s + 120),
                    heartbeat_timeout=COMMAND_HEARTBEAT,
                    retry_policy=COMMAND_RETRY,
                )
            )
        except ActivityError as error:
            state.state = "failed"
            state.detail = cause_of(error)
            raise DeliveryStopped("failed", f"{command.name} failed: {state.detail}") from error
        except (DeliveryStopped, asyncio.CancelledError):  # an abort, or another test's failure, stopped it
            state.state = "cancelled"
            raise
        state.state = "succeeded"
        state.detail = f"{result.seconds:.1f}s"
        state.log = f"{result.host}:{result.log_path}" if result.host else result.log_path
        if self.host_queue is None and result.host_queue and workflow.patched("host-affinity"):
            self.host_queue = result.host_queue

    async def _on_host(self, activity: Callable[..., Awaitable[T]], arg: Any, **options: Any) -> T:
        """Run `activity` on the worker that holds this delivery's checkout and reports (once a command has
        run); should that worker not pick it up within HOST_WAIT (gone), on any worker, said in status."""
        if self.host_queue is not None:
            try:
                result: T = await workflow.execute_activity_method(
                    activity, arg, task_queue=self.host_queue, schedule_to_start_timeout=HOST_WAIT, **options
                )
                return result
            except ActivityError as error:
                if not never_started(error):
                    raise
                self.host_lost = (
                    f"the worker that ran this delivery's first command ({self.host_queue}) did not answer"
                    f" within {format_duration(HOST_WAIT.total_seconds())}: its checkout and reports are not"
                    " used from here on"
                )
                workflow.logger.warning("%s", self.host_lost)
                self.host_queue = None
        result = await workflow.execute_activity_method(activity, arg, **options)
        return result

    async def _stage(self, stage: StagePlan) -> None:
        self.status.stage = stage.name
        self.status.wave = None
        self._upsert(search.STAGE.value_set(stage.name))
        actor = SYSTEM_ACTOR
        if stage.approval is not None:
            actor = await self._approval_gate(stage)
        await self._gates(stage, None)
        await self._wait_unpaused()
        if not self.claimed:
            await self._claim_app()
        self._set_phase("progressing")
        self._notify("stage", f"stage {stage.name} started")
        for wave_index, wave in enumerate(stage.waves):
            self.status.wave = wave_index + 1
            if wave_index > 0 and self.plan.policy is not None and self.plan.policy.every_wave:
                await self._gates(stage, wave_index + 1)
            await self._wait_unpaused()
            results = await self._wave(stage, wave, actor)
            actor = SYSTEM_ACTOR
            failed = [result for result in results if result.outcome == "failed"]
            if self.status.superseded_by is not None:
                await self._stop_superseded()
            if self.abort_action is not None:
                await self._rollback(
                    self._abort_scope(stage), self._who(self.abort_action), self.abort_action.reason
                )
                raise DeliveryStopped(
                    "aborted", self.abort_action.reason or f"aborted by {self._who(self.abort_action)}"
                )
            if failed:
                reason = "; ".join(f"{result.target}: {result.reason}" for result in failed)
                await self._rollback(self._failure_scope(stage, failed), SYSTEM_ACTOR, reason)
                raise DeliveryStopped("failed", reason)
        if stage.verify:  # plans made before stage verification runs have none: no new commands for them
            await self._verify_stage(stage)

    async def _verify_stage(self, stage: StagePlan) -> None:
        """The stage's `verify:` runs, in order, once every target is promoted (a run naming a target runs once
        per target). The first run that fails fails the stage: rolled back per scope (scope `target`: the
        targets it failed on)."""
        self.status.wave = None
        runs = self.status.verifications.setdefault(stage.name, [])
        base = {
            "stage": stage.name,
            "revision": self.plan.revision,
            "revision.short": self.plan.revision_short,
            "artifact": self.plan.artifact,
        }
        for run in stage.verify:
            named = stage.targets if run.per_target else [""]
            failed: list[str] = []
            for name in named:
                await self._wait_unpaused()
                variables = dict(base)
                if name:
                    target = self.status.targets.get(name)
                    urls = target.urls if target is not None else {}
                    variables |= {"target": name, **target_urls(self.plan.targets[name].urls, urls)}
                status = VerificationStatus(
                    run.name, "stage", "running", max_attempts=run.attempts, target=name
                )
                runs.append(status)
                try:
                    rendered = run.rendered(variables)
                except ValueError as error:
                    status.state = "failed"
                    status.detail = str(error)
                    failed.append(name)
                    continue
                context = VerificationContext(
                    delivery_id=self.plan.delivery_id,
                    source_repo=self.plan.source_repo,
                    revision=self.plan.revision,
                    artifact=self.plan.artifact,
                    label=f"verify-{stage.name}-{run.name}" + (f"-{name}" if name else ""),
                )
                passed = await self._abortable(
                    run_verification(rendered, context, status, self._verify_sleep, self._verify_report)
                )
                if not passed:
                    failed.append(name)
            if failed:
                where = f" on {', '.join(failed)}" if failed != [""] else ""
                details = "; ".join(status.detail for status in runs if status.state == "failed")
                reason = f"stage {stage.name}: verify {run.name} failed{where}: {details}"
                scope = (
                    [(stage.name, name) for name in failed if name]
                    if self.plan.rollback_scope == "target" and failed != [""]
                    else self._abort_scope(stage)
                )
                await self._rollback(scope, SYSTEM_ACTOR, reason)
                raise DeliveryStopped("failed", reason)
        self._notify("stage", f"stage {stage.name}: {len(runs)} verification run(s) passed")

    async def _verify_sleep(self, seconds: float) -> None:
        await workflow.sleep(seconds)

    async def _verify_report(self) -> None:
        """Stage verification shows in the status query at once; nothing to send."""

    async def _approval_gate(self, stage: StagePlan) -> str:
        approval = stage.approval
        assert approval is not None
        self.status.pending_approval = stage.name
        self._set_phase("awaiting-approval")
        self._notify("approval", f"stage {stage.name} awaits approval")

        def decided() -> bool:
            people = len(self.approved.get(stage.name, {}))  # one per person, however many identities
            return people >= approval.min_approvals or self.rejection is not None or self._stopping()

        timeout_s = approval.timeout_s
        incidents = self.plan.incidents
        too_long = incidents.waiting_too_long_s if incidents is not None else None
        if too_long is not None and too_long < timeout_s and workflow.patched("approval-waiting-incident"):
            # Waiting long for approvers raises an incident (once), then the approval waits out its timeout.
            try:
                await workflow.wait_condition(decided, timeout=timedelta(seconds=too_long))
                timeout_s = 0.0
            except TimeoutError:
                self._incident(
                    "waiting", f"stage {stage.name} awaiting approval for {format_duration(too_long)}"
                )
                timeout_s -= too_long
        try:
            if timeout_s > 0 or not decided():
                await workflow.wait_condition(decided, timeout=timedelta(seconds=max(timeout_s, 0.001)))
        except TimeoutError:
            self.status.pending_approval = None
            raise DeliveryStopped(
                "rejected", f"stage {stage.name} not approved within {format_duration(approval.timeout_s)}"
            ) from None
        self.status.pending_approval = None
        if self._stopping():
            await self._wait_unpaused()  # rolls back per scope and raises DeliveryStopped
        if self.rejection is not None:
            raise DeliveryStopped(
                "rejected",
                f"stage {stage.name} rejected by {self._who(self.rejection)}: {self.rejection.reason}",
            )
        # The approval that opened the gate: its person is named on the stage's first commit.
        return self._who(list(self.approved[stage.name].values())[-1])

    async def _gates(self, stage: StagePlan, wave: int | None) -> None:
        """Ask the gate kinds (aicd.gates) until none holds the stage: while held, the phase is `held` with
        each hold's reason, and the delivery sleeps until the earliest hold may lift (a window opening),
        its recheck, an override or break-glass by a listed person, or an abort."""
        if self.plan.policy is None and self.plan.schedule is None:
            return  # a plan made before governance
        if not workflow.patched("governance-gates"):
            return
        held_since = workflow.now()
        announced = ""
        raised_waiting = False
        while True:
            request = GateRequest(
                delivery_id=self.plan.delivery_id,
                app=self.plan.app,
                stage=stage.name,
                wave=wave,
                at=workflow.now().isoformat(),
                held_since=held_since.isoformat(),
                gitops_repo=self.plan.gitops_repo,
                gitops_branch=self.plan.gitops_branch,
                policy=self.plan.policy,
                schedule=self.plan.schedule,
                input_document=self._policy_input(stage),
                skip=list(self.overrides.get(stage.name, [])),
            )
            try:
                answer: GateAnswer = await self._on_host(
                    GovernanceActivities.check_gates,
                    request,
                    start_to_close_timeout=GATE_TIMEOUT,
                    retry_policy=GATE_RETRY,
                )
            except ActivityError as error:  # fail closed: a stage never starts unchecked
                answer = GateAnswer(
                    [GateHold("gates", f"gates could not be checked: {cause_of(error)}", "override")]
                )
            self.status.holds = answer.holds
            self.status.warnings = [*answer.warnings, *([self.host_lost] if self.host_lost else [])]
            if not answer.holds:
                break
            reasons = "; ".join(hold.reason for hold in answer.holds)
            self._set_phase("held")
            incidents = self.plan.incidents
            if (
                incidents is not None
                and incidents.waiting_too_long_s is not None
                and not raised_waiting
                and (workflow.now() - held_since).total_seconds() >= incidents.waiting_too_long_s
            ):
                raised_waiting = True
                self._incident(
                    "waiting", f"stage {stage.name} held since {held_since.isoformat()}: {reasons}"
                )
            if reasons != announced:
                announced = reasons
                self._notify("held", f"stage {stage.name} held: {reasons}")
            now = workflow.now()
            waits = [hold.recheck_s for hold in answer.holds]
            waits += [
                (datetime.fromisoformat(hold.until) - now).total_seconds()
                for hold in answer.holds
                if hold.until is not None
            ]
            used = len(self.overrides.get(stage.name, []))

            def lifted(used: int = used) -> bool:
                return self._stopping() or len(self.overrides.get(stage.name, [])) != used

            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lifted,
                    timeout=timedelta(seconds=max(1.0, min(waits))),
                )
            if self._stopping():
                self.status.holds = []
                await self._wait_unpaused()  # rolls back per scope and raises DeliveryStopped
        if announced:
            self._notify("released", f"stage {stage.name} no longer held")
        if self.status.phase == "held" or (self.status.paused and self.phase_before_pause == "held"):
            self._set_phase("progressing")  # while paused: what a resume goes back to

    def _policy_input(self, stage: StagePlan) -> dict[str, Any]:
        """The policy's input document but for time, wave and reports (the gate adds those)."""
        plan = self.plan
        trigger = self.input.trigger
        return {
            "delivery": {
                "id": plan.delivery_id,
                "app": plan.app,
                "revision": plan.revision,
                "started": self.status.started,
            },
            "artifact": {"name": plan.artifact, "tag": plan.artifact_tag},
            "trigger": {
                "source": trigger.source,
                "actor": trigger.actor,
                "branch": trigger.branch,
                "detail": trigger.detail,
            },
            "stage": {
                "name": stage.name,
                "targets": stage.targets,
                "waves": stage.waves,
                "regions": sorted(
                    {region for name in stage.targets if (region := plan.targets[name].region) is not None}
                ),
                "approvers": stage.approval.approvers if stage.approval else [],
            },
            "approvals": {name: list(actors) for name, actors in self.status.approvals.items()},
            "approved_by": {name: self._approvers(name) for name in self.status.approvals},
            "commands": {command.name: command.state for command in self.status.commands},
            "stages": [item.name for item in plan.stages],
            "targets": {
                name: {"kind": target.kind, "region": target.region, "path": target.path}
                for name, target in plan.targets.items()
            },
        }

    def _approvers(self, stage: str) -> list[dict[str, Any]]:
        """The policy input's `approved_by` of a stage: one entry per person who approved it, in order, with
        the identity and channel they approved through; an identity no person declares is a person of its
        own (`declared: false`), as the approval gate counts them."""
        return [
            {"person": person.name, "declared": person.declared, "identity": action.actor, "via": action.via}
            for person, action in self.approved.get(stage, {}).items()
        ]

    async def _wave(self, stage: StagePlan, wave: list[str], actor: str) -> list[TargetRolloutResult]:
        started: list[str] = []
        for name in wave:
            if self._stopping() and workflow.patched(STOP_LATE_ROLLOUTS):
                break  # an abort or a newer delivery came while the wave was starting: start no more of it
            target = self.plan.targets[name]
            child_input = self._rollout_input(stage, name, actor)
            if (previous := self.status.targets.get(name)) is not None:
                self.earlier_commits[name] = list(previous.commits)
            self.status.targets[name] = TargetStatus(
                target=name,
                stage=stage.name,
                kind=target.kind,
                commits=list(self.earlier_commits.get(name, [])),
                promoted_in=(
                    previous.promoted_in + ([previous.stage] if previous.state == "promoted" else [])
                    if previous is not None
                    else []
                ),
            )
            self.started_targets.append((stage.name, name))
            child_id = rollout_workflow_id(self.plan.delivery_id, stage.name, name)
            handle: workflow.ChildWorkflowHandle[Any, TargetRolloutResult]
            if TARGET_KINDS[target.kind].fleet:  # a fleet of sites: batches, not canary weights
                handle = await workflow.start_child_workflow(
                    EdgeFleetWorkflow.run, FleetInput.of(child_input), id=child_id
                )
            else:
                handle = await workflow.start_child_workflow(
                    TargetRolloutWorkflow.run, child_input, id=child_id
                )
            self.children[name] = handle
            started.append(name)
            if self._stopping() and workflow.patched(STOP_LATE_ROLLOUTS):
                # The stop came while this rollout was being started: it was told nothing (the stop told the
                # rollouts started by then); it stops at its next step boundary.
                await handle.signal(RolloutControl.abort, self._stop_action())
            elif child_input.paused != self.status.paused and workflow.patched(PAUSE_LATE_ROLLOUTS):
                # A pause or a resume came while this rollout was being started, told only to those started by
                # then: this one runs as its input said (unpaused while the line is stopped, or paused for good).
                await handle.signal(
                    RolloutControl.pause if self.status.paused else RolloutControl.resume,
                    self.control_action or HumanAction(SYSTEM_ACTOR, self.status.pause_reason),
                )
        results = []
        # Scopes wider than one target stop the siblings of a failed target at once.
        for name, outcome in await self._gather_children(stage, started):
            results.append(outcome)
            self.children.pop(name, None)
        return results

    def _rollout_input(self, stage: StagePlan, name: str, actor: str) -> TargetRolloutInput:
        return TargetRolloutInput(
            delivery_id=self.plan.delivery_id,
            app=self.plan.app,
            revision=self.plan.revision,
            revision_short=self.plan.revision_short,
            artifact_tag=self.plan.artifact_tag,
            gitops_repo=self.plan.gitops_repo,
            gitops_branch=self.plan.gitops_branch,
            write=self.plan.write,
            stage=stage.name,
            target=self.plan.targets[name],
            steps=stage.steps,
            analysis=self.plan.analysis,
            actor=actor,
            paused=self.status.paused,
            pause_reason=self.status.pause_reason,
            delivery_started=self.status.started,
            base=self._last_commit(name),
            file_bases=dict(self.file_bases.get(name, {})),
            source_repo=self.plan.source_repo,
            artifact=self.plan.artifact,
            strategy=stage.strategy,
        )

    async def _gather_children(
        self, stage: StagePlan, wave: list[str]
    ) -> list[tuple[str, TargetRolloutResult]]:
        pending = {name: asyncio.ensure_future(self._child_result(name)) for name in wave}
        done: dict[str, TargetRolloutResult] = {}
        stopped_siblings = False
        while pending:
            await workflow.wait_condition(lambda: any(task.done() for task in pending.values()))
            for name in [name for name, task in pending.items() if task.done()]:
                done[name] = pending.pop(name).result()
                if done[name].outcome == "superseded":
                    await self.superseded(done[name].superseded_by or "a newer delivery")
                if (
                    done[name].outcome == "failed"
                    and self.plan.rollback_scope != "target"
                    and not stopped_siblings
                ):
                    stopped_siblings = True
                    await self._signal_children(
                        RolloutControl.abort,
                        HumanAction(SYSTEM_ACTOR, f"stopped: {name} failed in stage {stage.name}"),
                    )
        return [(name, done[name]) for name in wave]

    async def _child_result(self, name: str) -> TargetRolloutResult:
        try:
            result = await self.children[name]
        except ChildWorkflowError as error:
            if TARGET_KINDS[self.plan.targets[name].kind].fleet:
                self.fleets_without_result.add(name)
            return TargetRolloutResult(name, "failed", f"rollout workflow failed: {cause_of(error)}")
        if result.status is not None:
            self._take_progress(result.status)
        if result.moved_sites is not None:
            self.moved_sites.setdefault(name, []).append(result.moved_sites)
        if result.file_bases:
            self.file_bases[name] = dict(result.file_bases)
        return result

    # --- rollback ---------------------------------------------------------------------------------
    def _failure_scope(self, stage: StagePlan, failed: list[TargetRolloutResult]) -> list[tuple[str, str]]:
        if self.plan.rollback_scope == "target":
            return [(stage.name, result.target) for result in failed]
        return self._abort_scope(stage)

    def _abort_scope(self, stage: StagePlan) -> list[tuple[str, str]]:
        if self.plan.rollback_scope == "release":
            return list(self.started_targets)
        return [(name_stage, name) for name_stage, name in self.started_targets if name_stage == stage.name]

    async def _rollback(
        self, targets: list[tuple[str, str]], actor: str, reason: str, what: str = "rollback"
    ) -> None:
        """One rollback commit per target, pushed together, then each target synced back in parallel. The
        release scope lists the newest stage first, peeling the delivery off in reverse. A file someone else
        has written since this delivery did (a newer delivery, a human) is left as it is, and said so."""
        if not targets:
            return
        self._set_phase("rolling-back")
        self._notify("rolled-back", reason)
        self._incident("rolled-back", f"rolling back {', '.join(name for _stage, name in targets)}: {reason}")
        ordered = list(reversed(targets))
        names = [name for _stage, name in ordered]
        if len(set(names)) < len(names) and workflow.patched("rollback-once-per-target"):
            # A target gone through several stages: rolled back once, as of its newest stage (the commit restores
            # its files to before the delivery); a second request would find nothing left and say so over it.
            ordered = [entry for index, entry in enumerate(ordered) if entry[1] not in names[:index]]
        requests = [
            RollbackRequest(
                repo=self.plan.gitops_repo,
                branch=self.plan.gitops_branch,
                delivery=delivery_trailer(self.plan.app, self.plan.revision),
                step=step_trailer(stage, name, "rollback"),
                actor=actor,
                subject=f"aicd: {self.plan.app} {self.plan.revision_short} {name} {what}",
                paths=self.plan.targets[name].files(),
                reason=reason,
                delivery_id=self.plan.delivery_id,
                started=self.status.started,
                write=self.plan.write,
            )
            for stage, name in ordered
        ]
        states = [
            self.status.targets.setdefault(
                name, TargetStatus(target=name, stage=stage, kind=self.plan.targets[name].kind)
            )
            for stage, name in ordered
        ]
        try:
            results = await workflow.execute_activity_method(
                GitOpsActivities.rollback_many,
                requests,
                task_queue=on_writer_queue(),
                start_to_close_timeout=GIT_TIMEOUT,
                heartbeat_timeout=GIT_HEARTBEAT,
                retry_policy=GIT_RETRY,
            )
        except ActivityError as error:
            for state in states:
                state.message = f"rollback commit failed: {cause_of(error)}"
            return
        syncs = []
        for (stage, name), state, result in zip(ordered, states, results, strict=True):
            left = "; ".join(f"left {path} as it is: {why}" for path, why in result.left.items())
            # A fleet's sites: none on the release, but those whose files the rollback left to their other writer.
            left_sites = fleet.sites_of(self.plan.targets[name].path, result.left)
            state.sites_by_state = fleet.rolled_back(
                state.sites_by_state, left_sites, state.failed_sites, result.left_restored
            )
            if left and result.sha is None:
                state.message = f"{what}: {left}"
                continue
            state.state = "rolled-back"
            state.weight = 0
            state.promoted_in = []  # its files are back to before the delivery
            if result.sha is None:
                state.message = f"nothing to roll back; {reason}"
                continue
            state.commits.append(result.sha)
            kept = "; ".join(f"kept the edits to {path} {whose}" for path, whose in result.kept.items())
            state.message = f"rolled back: {reason}" + "".join(f"; {part}" for part in (left, kept) if part)
            syncs.append(self._sync_back(stage, name, result.sha, state))
        await asyncio.gather(*syncs)

    async def _sync_back(self, stage: str, name: str, sha: str, state: TargetStatus) -> None:
        target = self.plan.targets[name]
        if TARGET_KINDS[target.kind].fleet:
            await self._sync_fleet_back(stage, name, sha, state)
            return
        try:
            await workflow.execute_activity(
                sync_target,
                SyncRequest(
                    delivery_id=self.plan.delivery_id,
                    stage=stage,
                    target=name,
                    kind=target.kind,
                    settings=target.typed(),
                    path=target.path,
                    gitops_repo=self.plan.gitops_repo,
                    gitops_branch=self.plan.gitops_branch,
                    revision=sha,
                    step=step_trailer(stage, name, "rollback"),
                    timeout_s=target.progress_deadline_s,
                ),
                start_to_close_timeout=timedelta(seconds=target.progress_deadline_s + 60),
                heartbeat_timeout=SYNC_HEARTBEAT,
                retry_policy=SYNC_RETRY,
            )
        except ActivityError as error:
            state.message = f"rolled back in Git; target not healthy after rollback: {cause_of(error)}"

    async def _sync_fleet_back(self, stage: str, name: str, sha: str, state: TargetStatus) -> None:
        """The sites the fleet moved, synced to the rollback commit as a batch's failed sites are to their restore
        commit (edge_batch.sync_sites) - every site of the fleet when one of its rollouts ended without a result
        to name them. Only an argocd fleet's: its sites run what their Applications were last synced to; a git
        fleet's sites follow their files by themselves."""
        moved = self.moved_sites.get(name, [])
        input = self._rollout_input(self.plan.stage(stage), name, SYSTEM_ACTOR)
        message = state.message
        unknown = name in self.fleets_without_result and fleet_of(input).site_kind == "argocd"
        if unknown and workflow.patched(SYNC_FLEET_WITHOUT_RESULT):
            try:
                moved = [MovedSites.every(await read_fleet(input))]
            except FleetStop as stop:
                state.message = f"{message}; its sites not synced back: {stop}"
                return
            state.message = (
                f"{message}; syncing every site back (its rollout ended without naming those it moved)"
            )
        elif not moved or fleet_of(input).site_kind != "argocd" or not workflow.patched(SYNC_FLEET_BACK):
            return
        else:
            state.message = f"{message}; syncing the {sum(part.count for part in moved)} sites it moved back"
        unsynced: dict[str, str] = {}
        for part in moved:  # one per stage that rolled the fleet out
            unsynced |= await sync_sites(input, step_trailer(stage, name, "rollback"), part.batch, sha)
        state.message = message
        if unsynced:
            state.message += (
                f"; not healthy after the rollback: {fleet.with_reasons(unsynced, list(unsynced))}"
            )

    # --- helpers ----------------------------------------------------------------------------------
    async def _wait_unpaused(self) -> None:
        await workflow.wait_condition(lambda: not self.status.paused or self._stopping())
        if self.status.superseded_by is not None:
            await self._stop_superseded()
        if self.abort_action is not None:
            await self._rollback(
                self._abort_scope_current(), self._who(self.abort_action), self.abort_action.reason
            )
            raise DeliveryStopped(
                "aborted", self.abort_action.reason or f"aborted by {self._who(self.abort_action)}"
            )

    def _abort_scope_current(self) -> list[tuple[str, str]]:
        if self.status.stage is None:
            return []
        return self._abort_scope(self.plan.stage(self.status.stage))

    async def _abortable(self, awaitable: Awaitable[T]) -> T:
        """Await an activity (or several), giving up as soon as an abort is accepted. What it gives up on is
        cancelled and settled first, also when an enclosing _abortable gave up before it (each test runs in
        one, inside the tests' one): no command runs on, and no cancel comes after the delivery's end."""
        settles = workflow.patched(SETTLE_ABANDONED)  # here, before any await: never after the end
        task = asyncio.ensure_future(awaitable)
        try:
            await workflow.wait_condition(lambda: task.done() or self._stopping())
        except asyncio.CancelledError:
            if settles:
                await settle(task)
            raise
        if not task.done():
            if settles:
                await settle(task)
            else:
                task.cancel()
            await self._wait_unpaused()  # raises DeliveryStopped
        return task.result()

    async def _claim_app(self) -> None:
        """Before the first GitOps write: claim the app from its older running deliveries (spec.concurrency).
        supersede: they are told to stop, and this delivery goes on at once (Git ownership keeps their late
        writes out). queue: this delivery waits, queued, until they have ended."""
        self.claimed = True
        if not workflow.patched("release-claim"):
            return  # a delivery started before aicd claimed apps: it goes on as it began
        request = ClaimRequest(self.plan.app, self.plan.delivery_id, self.plan.concurrency)
        try:
            if workflow.patched(LOCAL_ACTIVITIES):  # a few calls to Temporal: no activity task, no task more
                claim = await workflow.execute_local_activity_method(
                    ReleaseActivities.claim,
                    request,
                    start_to_close_timeout=CLAIM_TIMEOUT,
                    retry_policy=CLAIM_RETRY,
                )
            else:
                claim = await workflow.execute_activity_method(
                    ReleaseActivities.claim,
                    request,
                    start_to_close_timeout=CLAIM_TIMEOUT,
                    retry_policy=CLAIM_RETRY,
                )
        except FailureError as error:  # a local activity's last failure comes unwrapped, not as ActivityError
            workflow.logger.warning(
                "cannot claim %s from older deliveries: %s", self.plan.app, cause_of(error)
            )
            return
        if not claim.older:
            return
        if self.plan.concurrency != "queue":
            if claim.same_queue and workflow.patched(SUPERSEDE_WAITS):
                self.status.waiting_for = list(claim.same_queue)
                until = workflow.now() + timedelta(seconds=self.plan.supersede_wait_s)
                await self._wait_for_ended(SUPERSEDE_RECHECK, until)
            return
        self.status.waiting_for = list(claim.older)
        self._set_phase("queued")
        self._notify("queued", f"queued behind {', '.join(claim.older)}")
        await self._wait_for_ended(QUEUE_RECHECK)

    async def _wait_for_ended(self, recheck: timedelta, until: datetime | None = None) -> None:
        """Wait until the older deliveries of `status.waiting_for` have ended (they tell this one at their end;
        `recheck` is the net for a notice that never comes), or until `until`: a superseded delivery that cannot
        withdraw its canary (a remote refusing its pushes) is left to Git's ownership rules then."""
        while self.status.waiting_for and not self._stopping():
            wait = recheck if until is None else min(recheck, until - workflow.now())
            if wait <= timedelta(0):
                break
            try:
                await workflow.wait_condition(
                    lambda: not self.status.waiting_for or self._stopping(), timeout=wait
                )
            except TimeoutError:
                with contextlib.suppress(ActivityError):
                    still = await workflow.execute_activity_method(
                        ReleaseActivities.running,
                        list(self.status.waiting_for),
                        start_to_close_timeout=CLAIM_TIMEOUT,
                        retry_policy=CLAIM_RETRY,
                    )
                    self.status.waiting_for = [other for other in self.status.waiting_for if other in still]
        self.status.waiting_for = []
        await self._wait_unpaused()  # an abort or a newer delivery while waiting ends it here

    async def _stop_superseded(self) -> None:
        """End superseded: the targets where this delivery has a canary in progress go back to their state
        before it (one commit; files a newer delivery already wrote are left), promoted ones stay."""
        by = self.status.superseded_by
        in_progress = [
            (stage, name)
            for stage, name in self.started_targets
            if self.status.targets.get(name) is not None
            and self.status.targets[name].state not in ("promoted", "rolled-back")
        ]
        await self._rollback(
            in_progress, SYSTEM_ACTOR, f"superseded by {by}: canary withdrawn", what="withdraw canary"
        )
        raise DeliveryStopped("superseded", f"superseded by {by}")

    async def _tell_waiters(self) -> None:
        """Queued newer deliveries go on once this one has ended."""
        for waiter in self.waiters:
            try:
                await workflow.get_external_workflow_handle(waiter).signal(
                    DeliveryWorkflow.predecessor_ended, self.plan.delivery_id
                )
            except Exception as error:  # it ended or was terminated: nothing waits any more
                workflow.logger.info("%s not told of the end: %s", waiter, error)

    def _last_commit(self, name: str) -> str | None:
        """This delivery's last commit to a target's files (from an earlier stage), if any."""
        known = self.status.targets.get(name)
        return known.commits[-1] if known is not None and known.commits else None

    def _set_phase(self, phase: Phase) -> None:
        if self.status.paused and phase not in TERMINAL_PHASES and phase != "paused":
            self.phase_before_pause = phase
            return
        self.status.phase = phase
        self._upsert(search.PHASE.value_set(phase))
        if phase != self.audited_phase:
            self.audited_phase = phase
            self._audit("phase", {"phase": phase})

    def _upsert(self, update: Any) -> None:
        if self.input.index_search_attributes:
            workflow.upsert_search_attributes([update])

    async def _signal_children(self, signal: ChildSignal, action: HumanAction) -> None:
        async def tell(handle: workflow.ChildWorkflowHandle[Any, TargetRolloutResult]) -> None:
            try:
                await handle.signal(signal, action)
            except Exception as error:  # a child that already finished has nothing to be told
                workflow.logger.info("signal %s to %s not delivered: %s", signal.__name__, handle.id, error)

        await asyncio.gather(*(tell(handle) for handle in list(self.children.values())))

    def _notify(self, event: str, detail: str) -> None:
        if not self.plan.slack_channel:
            return
        self.slack_outbox.append(NotifyEvent(event, detail))
        if not self.notifications:
            # One sender for the delivery's life: calls go one at a time and in order, so every call after the
            # first knows the message to update, and what piles up while Slack is slow goes out in one call.
            self.notifications.append(asyncio.ensure_future(self._send_notification()))

    async def _send_notification(self) -> None:
        channel = self.plan.slack_channel
        assert channel is not None
        while True:
            # Target progress arrives from the children (a signal when one starts waiting, the final status
            # with its result); each change of step, state, weight or final verdict becomes a thread reply.
            await workflow.wait_condition(
                lambda: (
                    bool(self.slack_outbox)
                    or bool(progress_changes(self.status.targets, self.slack_progress))
                )
            )
            steps = []
            for name, key in progress_changes(self.status.targets, self.slack_progress):
                self.slack_progress[name] = key
                steps.append(NotifyEvent("step", describe_progress(self.status.targets[name]), target=name))
            events = [e for e in self.slack_outbox if e.kind != "finished"] + steps
            events += [e for e in self.slack_outbox if e.kind == "finished"]
            self.slack_outbox = []
            request = NotifyRequest(
                channel,
                compact_status(self.status),
                events,
                self.slack_message,
                approval_info(self.plan, self.status.pending_approval),
            )
            try:
                result = await workflow.execute_activity(
                    notify,
                    request,
                    schedule_to_close_timeout=NOTIFY_TIMEOUT * 4,
                    start_to_close_timeout=NOTIFY_TIMEOUT,
                    retry_policy=NOTIFY_RETRY,
                )
                if result.message is not None:
                    self.slack_message = result.message
            except ActivityError as error:  # Slack down never fails a delivery; the next call tries again
                workflow.logger.warning(
                    "notification %s not sent: %s", [e.kind for e in events], cause_of(error)
                )
            if any(event.kind == "finished" for event in events):
                return

    async def _drain_notifications(self) -> None:
        """Give pending notifications a short while (the last one normally lands well within a second); an
        unreachable Slack must not hold the delivery's result."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: all(task.done() for task in self.notifications), timeout=timedelta(seconds=10)
            )
        if self.audit_sender and workflow.patched(AUDIT_DRAIN_WITHOUT_TIMER):
            await self.audit_sender[0]  # bounded by the last batch's own schedule-to-close (AUDIT_TIMEOUT)
        elif self.audit_sender:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self.audit_sender[0].done(), timeout=AUDIT_TIMEOUT)
        if self.incidents:  # a few retries of the last incident hook (PagerDuty slow or briefly down)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: all(task.done() for task in self.incidents), timeout=INCIDENT_TIMEOUT
                )

    def _audit(self, kind: str, data: dict[str, Any]) -> None:
        """Append to the delivery's audit stream (written by the worker's sinks, aicd.activities.audit)."""
        if not workflow.patched("audit-trail"):
            return
        self.audit_seq += 1
        self.audit_outbox.append(
            AuditEntry(
                kind, self.plan.delivery_id, self.plan.app, workflow.now().isoformat(), self.audit_seq, data
            )
        )
        if not self.audit_sender:
            self.audit_sender.append(asyncio.ensure_future(self._send_audit()))

    async def _send_audit(self) -> None:
        """One sender, in order: what piles up while a sink is slow goes in the next batch. Since
        LOCAL_ACTIVITIES a batch is a local activity: the worker running the workflow task writes it within
        that task, so a send costs the server one marker event, not an activity task's round trip and a
        workflow task more. Each worker writes to its own sinks, as before (an activity ran on any worker of
        the queue). A slow sink holds the task open (the SDK heartbeats it), delaying messages by seconds."""
        local = workflow.patched(LOCAL_ACTIVITIES)  # decided once, at the first send: a run keeps its way
        while True:
            await workflow.wait_condition(lambda: bool(self.audit_outbox))
            batch, self.audit_outbox = self.audit_outbox, []
            # The end waits for the last batch: an unreachable sink holds the delivery's result this long at most.
            last = any(entry.kind == "finished" for entry in batch)
            try:
                if local:
                    # An attempt holds the workflow task open (a pause waits for its next heartbeat, ~8 s):
                    # attempts are kept short, and waits between them beyond a few seconds are durable timers.
                    await workflow.execute_local_activity_method(
                        AuditActivities.append,
                        batch,
                        schedule_to_close_timeout=AUDIT_TIMEOUT if last else AUDIT_TIMEOUT * 10,
                        start_to_close_timeout=LOCAL_AUDIT_ATTEMPT,
                        retry_policy=AUDIT_RETRY,
                        local_retry_threshold=LOCAL_AUDIT_RETRY_THRESHOLD,
                    )
                else:  # a delivery that sent its first batch as an activity goes on that way
                    await workflow.execute_activity_method(
                        AuditActivities.append,
                        batch,
                        schedule_to_close_timeout=AUDIT_TIMEOUT if last else AUDIT_TIMEOUT * 10,
                        start_to_close_timeout=AUDIT_TIMEOUT,
                        retry_policy=AUDIT_RETRY,
                    )
            # Never fails a delivery; `aicd audit` rebuilds the records. (A local activity's last failure comes
            # unwrapped, its own ApplicationError, not an ActivityError.)
            except FailureError as error:
                workflow.logger.warning("%d audit records not written: %s", len(batch), cause_of(error))
            if last:
                return

    def _incident(self, kind: str, summary: str) -> None:
        """Raise (or, for a success, resolve) through the incident hooks, in the background: a hook that
        fails is retried and never holds or fails the delivery."""
        incidents = self.plan.incidents
        if incidents is None or not workflow.patched("incident-hooks"):
            return
        event = IncidentEvent(
            kind=kind,
            delivery_id=self.plan.delivery_id,
            app=self.plan.app,
            revision=self.plan.revision,
            summary=f"{self.plan.app} {self.plan.revision_short}: {summary}",
            at=workflow.now().isoformat(),
            stage=self.status.stage,
            phase=self.status.phase,
        )

        async def send() -> None:
            try:
                await workflow.execute_activity_method(
                    IncidentActivities.send,
                    IncidentRequest(incidents, event),
                    schedule_to_close_timeout=INCIDENT_TIMEOUT,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=INCIDENT_RETRY,
                )
            except ActivityError as error:
                workflow.logger.warning("incident hook %s not sent: %s", kind, cause_of(error))

        self.incidents.append(asyncio.ensure_future(send()))
