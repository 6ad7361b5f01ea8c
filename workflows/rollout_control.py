"""What every rollout child workflow shares (a target's TargetRolloutWorkflow, an edge fleet's
EdgeFleetWorkflow): the parent delivery's pause / resume / abort signals, waits that a pause stops and an
abort ends, waits for a human, the analysis step, progress reports to the parent, and the failed result a bug
in the rollout's code ends it with (`_failed_with_a_result`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from aicd.activities.analysis import AnalysisLookRequest, analysis_look
    from aicd.errors import ErrorType
    from aicd.flags import FlagChange
    from aicd.fleet import MovedSites
    from aicd.judge import Action, AnalysisVerdict, Outcome, decide, next_look_in, planned_intervals
    from aicd.messages import (
        SYSTEM_ACTOR,
        TARGET_PROGRESS_SIGNAL,
        HumanAction,
        RolloutOutcome,
        TargetStatus,
        VerificationStatus,
    )
    from aicd.plan import AnalysisPlan, TargetPlan, WritePlan
    from aicd.steps import AnalysisStep, Step
    from aicd.strategies import BlueGreenStrategy
    from aicd.verification import Verification, target_urls
    from aicd.workflows.common import (
        ANALYSIS_HEARTBEAT,
        ANALYSIS_RETRY,
        ANALYSIS_TIMEOUT,
        application_cause,
        cause_of,
        describe_bug,
    )
    from aicd.workflows.verification import VerificationContext, run_verification

T = TypeVar("T")

# The patch after which a rollout child reports to its parent only when a watcher needs to know at once (it
# starts waiting: a pause, a human, an analysis or other waiting step, a verification run) and hands its final
# status back in its result: a progress signal after every step cost the parent and the child two workflow
# tasks each. Live progress between reports is the child's `current` query (aicd.client.get_status).
PROGRESS_IN_RESULT = "progress-in-result"
# The patch after which a target's write checks for others' commits since this delivery's last write of the
# files it writes, not of any file of the target: before it, a human's edit of the values file made before a
# flag step (another file) was written over by the next values step without a pause.
PER_FILE_BASE = "per-file-ownership-base"
# The patch after which a write refused on its retry, whose commit an earlier attempt had pushed (its result lost
# with its worker), reports that commit: before it, the rollout never owned up to a commit on the branch.
REPORT_LANDED = "report-landed-commit"


@dataclass
class TargetRolloutInput:
    delivery_id: str  # the parent DeliveryWorkflow's ID; progress is signalled there
    app: str
    revision: str
    revision_short: str
    artifact_tag: str
    gitops_repo: str
    gitops_branch: str
    write: WritePlan
    stage: str
    target: TargetPlan
    steps: list[Step]
    analysis: AnalysisPlan | None
    actor: str = SYSTEM_ACTOR  # who let this stage start (the approver), written on its first commit
    paused: bool = False
    pause_reason: str = ""
    delivery_started: str = ""  # the delivery's start (ISO), in every commit's trailers: orders deliveries
    # This delivery's last commit to the target's files in an earlier stage (None: it never wrote them).
    base: str | None = None
    # Where a verification run's command runs (the delivery's source at its revision); plans made before
    # verification runs have no value here and no verify steps.
    source_repo: str = ""
    artifact: str = ""
    # Any strategy but a canary, whose steps are `steps` (plans before strategies had kinds: None).
    strategy: BlueGreenStrategy | None = None
    # This delivery's last commit of each of the target's files in an earlier stage (by path): `base` alone
    # would hide a human's edit of one file made before the earlier stage's last write of the other.
    file_bases: dict[str, str] = field(default_factory=dict)


@dataclass
class TargetRolloutResult:
    target: str
    outcome: RolloutOutcome
    reason: str = ""
    commits: list[str] = field(default_factory=list)
    superseded_by: str = ""  # outcome superseded: the newer delivery that wrote the target's file
    # The target's final status: the parent takes it from here instead of a last progress signal (None from
    # children started before PROGRESS_IN_RESULT).
    status: TargetStatus | None = None
    # An edge fleet: the sites its batches moved to the release, which the delivery's rollback syncs back (None:
    # not a fleet, a fleet that moved none, or one that ended before fleets said so).
    moved_sites: MovedSites | None = None
    # The ownership base of each file the rollout wrote (and of those its input named), for a later stage.
    file_bases: dict[str, str] = field(default_factory=dict)


class Aborted(Exception):
    pass


class StepFailed(Exception):
    pass


class Superseded(Exception):
    """A newer delivery of the app has written the target's file: this delivery never writes it again.
    `landed`: this step's own commit, pushed by an earlier attempt before the newer delivery wrote."""

    def __init__(self, by: str, message: str, landed: str = "") -> None:
        super().__init__(message)
        self.by = by
        self.landed = landed


class RolloutControl:
    """Base of the rollout child workflows; subclasses set `input` and `status` before waiting on anything."""

    input: TargetRolloutInput
    status: TargetStatus

    def _init_control(
        self,
        *,
        paused: bool,
        pause_reason: str,
        next_actor: str,
        aborted: bool = False,
        abort_reason: str = "",
    ) -> None:
        self.paused = paused
        self.pause_reason = pause_reason
        self.aborted = aborted
        self.abort_reason = abort_reason
        self.next_actor = next_actor  # written on the next commit: the approver, or who resumed
        self.resumed_by: str | None = None  # releases a `pause: {}` step or an inconclusive analysis
        self.reports: list[asyncio.Future[None]] = []
        self.report_seq = 0
        self.progress_in_result = False  # set by `_patch_reporting` as the run starts
        # The last commit of this delivery to the target's files, or a human's commit a resume accepted:
        # every write says it, so Git can tell whether someone else wrote the files since.
        self.base: str | None = None
        # The same per file of the target (a target with a flags file writes two): a write of one file checks
        # for others' commits since this delivery's last write of *that* file (see PER_FILE_BASE).
        self.file_bases: dict[str, str] = {}
        self.per_file_base = False  # set by `_patch_per_file_base` as a run starts
        # The target's URLs as its driver reported them (placeholder name -> URL), for verification runs.
        self.reported_urls: dict[str, str] = {}

    # --- messages from the parent delivery -------------------------------------------------------
    @workflow.signal(name="pause")
    def pause(self, action: HumanAction) -> None:
        self.paused = True
        self.pause_reason = action.reason

    @workflow.signal(name="resume")
    def resume(self, action: HumanAction) -> None:
        # A resume undoes a pause first; only a resume while not paused releases a step waiting for a human,
        # so lifting "stop the line" never also waves a `pause: {}` gate through.
        if self.paused:
            self.paused = False
        else:
            self.resumed_by = action.actor
        self.next_actor = action.actor

    @workflow.signal(name="abort")
    def abort(self, action: HumanAction) -> None:
        self.aborted = True
        self.abort_reason = action.reason or f"aborted by {action.actor}"

    @workflow.query(name="current")
    def current(self) -> TargetStatus:
        return self.status

    # --- waiting: a pause stops the clocks, an abort ends every wait ------------------------------
    async def _wait_unpaused(self) -> None:
        if self.aborted:
            raise Aborted()
        if not self.paused:
            return
        state, message = self.status.state, self.status.message
        self.status.state = "paused"
        self.status.message = f"paused: {self.pause_reason}" if self.pause_reason else "paused"
        await self._report()
        await workflow.wait_condition(lambda: not self.paused or self.aborted)
        if self.aborted:
            raise Aborted()
        self.status.state = "progressing" if state == "paused" else state
        self.status.message = message
        await self._report()

    async def _wait_for_human(self, why: str) -> None:
        self.resumed_by = None
        self.status.state = "awaiting-resume"
        self.status.message = why
        await self._report()
        await workflow.wait_condition(lambda: self.resumed_by is not None or self.aborted)
        if self.aborted:
            raise Aborted()
        self.status.state = "progressing"
        self.status.message = f"resumed by {self.resumed_by}"

    def _patch_per_file_base(self) -> None:
        """Called as a run starts, before any command, so a run decides once how it picks a write's base."""
        self.per_file_base = workflow.patched(PER_FILE_BASE)

    def _base_for(self, paths: list[str]) -> str | None:
        """The ownership base of a write of `paths`: this delivery's last write of those very files (a write
        of one file of the target after a write of another must still see a human's edit of it made in
        between), else its last write to the target."""
        if self.per_file_base and paths:
            known = {self.file_bases.get(path) for path in paths}
            if len(known) == 1 and None not in known:
                return known.pop()
        return self.base

    def _wrote(self, paths: list[str], sha: str) -> None:
        """`sha` is now the base of the target and of these files."""
        self.base = sha
        for path in paths:
            self.file_bases[path] = sha

    async def _guarded_write(
        self, write: Callable[[str | None], Awaitable[T]], paths: list[str] | None = None
    ) -> T:
        """Run a GitOps write (`write(base)`) of `paths` (None: files the base is not kept per file for),
        reacting to who owns the files: a newer delivery's write ends this rollout (Superseded); a human's
        commit since this delivery's last write waits for a human - `resume` continues from the file as the
        human left it, `abort` ends and keeps it."""
        while True:
            try:
                return await write(self._base_for(paths or []))
            except ActivityError as error:
                cause = application_cause(error)
                details = cause.details[0] if cause is not None and cause.details else {}
                landed = str(details.get("landed") or "")
                if landed and workflow.patched(REPORT_LANDED):
                    if landed not in self.status.commits:
                        self.status.commits.append(landed)
                else:
                    landed = ""
                if cause is not None and cause.type == ErrorType.SUPERSEDED:
                    raise Superseded(str(details.get("by", "")), cause.message, landed) from error
                if cause is None or cause.type != ErrorType.HUMAN_EDIT:
                    raise
                self.status.human_edit = {
                    key: str(details.get(key, "")) for key in ("sha", "author", "subject")
                }
                await self._wait_for_human(
                    f"{cause.message}; resume continues from the file as it is now, abort ends the delivery and keeps it"
                )
                self.status.human_edit = None
                # What a resume accepts: the branch head the check saw (a human's commit itself, in histories
                # from before the head was reported).
                accepted = str(details.get("accepted") or details.get("sha")) or self.base
                if accepted is not None:
                    self._wrote(paths or [], accepted)

    async def _sleep(self, seconds: float) -> None:
        """A durable timer whose clock stops while the rollout is paused."""
        remaining = seconds
        while remaining > 0:
            await self._wait_unpaused()
            began = workflow.now()
            try:
                await workflow.wait_condition(
                    lambda: self.paused or self.aborted, timeout=timedelta(seconds=remaining)
                )
            except TimeoutError:
                return
            remaining -= (workflow.now() - began).total_seconds()
        await self._wait_unpaused()

    # --- what a step kind may do (aicd.steps.base.Rollout; subclasses add `commit`) --------------------
    @property
    def write(self) -> WritePlan:
        return self.input.write

    @property
    def artifact_tag(self) -> str:
        return self.input.artifact_tag

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds)

    async def wait_for_human(self, why: str) -> None:
        await self._wait_for_human(why)

    async def analyse(self, step: AnalysisStep) -> None:
        await self._analysis(step)

    async def change_flag(self, step_id: str, description: str, change: FlagChange) -> None:
        raise StepFailed(f"{step_id}: {self.input.target.name} has no flag file of its own")

    async def verify(self, step_id: str, run: Verification) -> None:
        """The run against this target; a run whose every attempt failed fails the step (StepFailed)."""
        status = VerificationStatus(run.name, step_id, "running", max_attempts=run.attempts)
        self.status.verifications.append(status)
        variables = {
            "stage": self.input.stage,
            "target": self.input.target.name,
            "revision": self.input.revision,
            "revision.short": self.input.revision_short,
            "artifact": self.input.artifact,
            **target_urls(self.input.target.urls, self.reported_urls),
        }
        try:
            rendered = run.rendered(variables)
        except ValueError as error:
            status.state = "failed"
            status.detail = str(error)
            raise StepFailed(f"{step_id}: verify {run.name}: {error}") from None
        context = VerificationContext(
            delivery_id=self.input.delivery_id,
            source_repo=self.input.source_repo,
            revision=self.input.revision,
            artifact=self.input.artifact,
            label=f"verify-{self.input.stage}-{self.input.target.name}-{step_id}-{len(self.status.verifications)}",
        )
        await self._report()
        if not await run_verification(rendered, context, status, self._sleep, self._report):
            raise StepFailed(
                f"{step_id}: verify {run.name} failed after {status.attempts} attempt(s): {status.detail}"
            )

    # --- analysis -------------------------------------------------------------------------------
    def _analysis_position(self) -> str:
        """Where the analysis stands, for a failure message (a fleet names its batch)."""
        return ""

    async def _analysis(self, step: AnalysisStep) -> None:
        """Look every interval; after each look the judge's decision unit says: go on, pass, fail (StepFailed),
        or wait for a human (a resume counts as a pass, an abort rolls back). With the default
        `onInconclusive: pause` the timers and looks are those of every earlier version of this loop."""
        analysis = self.input.analysis
        if analysis is None or step.duration_s is None:  # validation refuses this; never pass silently
            raise StepFailed(f"{step.id}: analysis step without an analysis provider")
        policy = step.policy(analysis.interval_s)
        started = workflow.now().timestamp()
        active_s = 0.0
        while True:
            wait = next_look_in(policy, active_s)
            await self._sleep(wait)
            active_s += wait
            verdict = await self._look(
                analysis, step, started, active_s >= policy.duration_s, planned_intervals(policy)
            )
            decision = decide(verdict, policy, active_s)
            self.status.last_verdict = decision.verdict
            await self._report_step_done()  # interim looks: the `current` query shows them
            if decision.action == Action.CONTINUE:
                continue
            if decision.action == Action.FAIL:
                raise StepFailed(f"analysis{self._analysis_position()} failed: {decision.reason}")
            if decision.action == Action.WAIT_FOR_HUMAN:
                await self._wait_for_human(f"analysis inconclusive: {decision.reason}")
            return

    async def _look(
        self, analysis: AnalysisPlan, step: AnalysisStep, started: float, final: bool, planned: int
    ) -> AnalysisVerdict:
        request = AnalysisLookRequest(
            analysis=analysis,
            metrics=step.metrics,
            start=started,
            end=workflow.now().timestamp(),
            canary_weight=self.status.weight,
            final=final,
            variables={
                "stage": self.input.stage,
                "target": self.input.target.name,
                "revision": self.input.revision,
            },
            planned_intervals=planned,
        )
        try:
            verdict: AnalysisVerdict = await workflow.execute_activity(
                analysis_look,
                request,
                start_to_close_timeout=ANALYSIS_TIMEOUT,
                heartbeat_timeout=ANALYSIS_HEARTBEAT,
                retry_policy=ANALYSIS_RETRY,
            )
            return verdict
        except ActivityError as error:
            # The provider failing is data about the analysis: never a pass; the decision goes on or asks a human.
            return AnalysisVerdict(Outcome.INCONCLUSIVE, (), f"the analysis could not run: {cause_of(error)}")

    # --- reporting ------------------------------------------------------------------------------
    def _patch_reporting(self) -> None:
        """Called first in `run`, before any command, so a run decides once how it reports."""
        self.progress_in_result = workflow.patched(PROGRESS_IN_RESULT)

    async def _report_step_done(self) -> None:
        """A step ended: runs before PROGRESS_IN_RESULT reported it; now the next wait or the result does."""
        if not self.progress_in_result:
            await self._report()

    async def _report(self) -> None:
        """Tell the parent delivery how this target stands (its status query shows every target).

        Reports go out one after another so the parent never sees an older state after a newer one, and
        without holding up the rollout for the server's acknowledgement; a report overtaken by a newer one
        before it was sent is dropped. `_flush_reports` waits for the last one."""
        self.report_seq += 1
        snapshot = dataclasses.replace(self.status, commits=list(self.status.commits))
        previous = self.reports[-1] if self.reports else None
        self.reports.append(asyncio.ensure_future(self._send_report(previous, self.report_seq, snapshot)))

    async def _send_report(
        self, previous: asyncio.Future[None] | None, seq: int, snapshot: TargetStatus
    ) -> None:
        if previous is not None:
            await previous
        if seq < self.report_seq:
            return  # a newer report is queued behind this one
        parent = workflow.get_external_workflow_handle(self.input.delivery_id)
        try:
            await parent.signal(TARGET_PROGRESS_SIGNAL, snapshot)
        except Exception as error:  # the parent gone (terminated) must not fail the target
            workflow.logger.warning("cannot report progress to %s: %s", self.input.delivery_id, error)

    async def _flush_reports(self) -> None:
        if self.reports:
            await self.reports[-1]

    async def _failed_with_a_result(
        self,
        run: Awaitable[TargetRolloutResult],
        what: str,
        *,
        bug_patch: str,
        failure_patch: str | None = None,
    ) -> TargetRolloutResult:
        """The rollout's own result - or a `failed` one (`_finish`: its commits, its status) when `run` raises a
        bug, a plain Python exception, under `bug_patch`; or a Temporal failure (an ActivityError no step
        turned into an outcome, an ApplicationError, ...) under `failure_patch` (None: such a failure fails
        the workflow, which ends the parent's wait too).

        A bug would otherwise fail the workflow task, which Temporal retries for ever: the delivery would wait
        on this rollout until someone terminates it. Caught here rather than by `failure_exception_types` on
        the definition: that would fail the workflow with no result (the delivery then learns nothing the
        rollout wrote), and `Exception` there also turns core's nondeterminism errors into failed rollouts (the
        SDK checks NondeterminismError against its super types). A run stuck on a bug before its patch ends at
        its next task attempt; a history recorded then has no command after its failed task."""
        try:
            return await run
        except FailureError as error:
            if (
                failure_patch is None
                or isinstance(error, CancelledError)
                or not workflow.patched(failure_patch)
            ):
                raise
            reason = f"{what} failed: {cause_of(error)}"
        except workflow.NondeterminismError:
            raise  # a deploy that breaks replay (or sandbox misuse): the task retries until a fixed deploy
        except Exception as error:
            if not workflow.patched(bug_patch):
                raise
            workflow.logger.exception("%s of %s failed on a bug", what, self.input.target.name)
            reason = f"{what} failed on a bug: {describe_bug(error)}"
        try:
            return await self._finish("failed", reason)
        except workflow.NondeterminismError:
            raise
        except Exception as error:
            if not workflow.patched(bug_patch):
                raise
            # A bug in making the result itself: a failed workflow at least ends the parent's wait (whose
            # rollback restores the files all the same; a fleet's syncs every site, as for a terminated one).
            raise ApplicationError(f"{reason}; then {describe_bug(error)}", non_retryable=True) from error

    async def _finish(
        self, outcome: RolloutOutcome, reason: str, superseded_by: str = ""
    ) -> TargetRolloutResult:
        self.status.state = outcome
        self.status.message = reason
        final = None
        if self.progress_in_result:
            final = dataclasses.replace(self.status, commits=list(self.status.commits))
        else:
            await self._report()
        await self._flush_reports()  # an earlier report reaches the parent before the result
        return TargetRolloutResult(
            self.input.target.name,
            outcome,
            reason,
            list(self.status.commits),
            superseded_by,
            final,
            file_bases=dict(self.file_bases),
        )
