"""EdgeFleetWorkflow: rolls one `edge` target - a fleet of sites - out in batches.

The fleet is the target's `sites`: an inline list, or `{file: path}`, a YAML list in the GitOps repository
(read once when the fleet starts). `batches` are cumulative shares of the fleet (`1%`, `10%`, `50%`, `100%`,
see aicd.fleet for the rounding). For each batch, in fleet order:

1. one commit (trailer step `<stage>/<target>/batch-<n>`, n from 1) that sets `write.image` to the artifact
   tag in each site's file (`path` with `{{ site }}`). Edge sites are promoted directly: a canary weight
   splits traffic inside one deployment and means nothing on a single site, so the stage's `setWeight`
   steps are skipped here - the batches are the fleet's canary;
2. per-site health through the `edge_check_sites` activity (see activities/edge.py: `siteKind` git or
   argocd, plus a site's optional health URL), a sliding window of chunks of a few hundred sites;
3. failed sites within `maxFailures` go back to the previous version in one follow-up commit
   (`batch-<n>-restore`) and are named in the status and the result; more failures than `maxFailures` in
   total stop the fleet at once with outcome `failed`, and the parent delivery rolls back per
   `rollback.scope` (its rollback restores every site file through the path template, counts the sites the
   fleet moved `rolled-back` - `left-as-is` those whose files someone else wrote since - and syncs an argocd
   fleet's moved sites - the result names them - to the rollback commit). An error no step turns into an
   outcome (a non-retryable activity error) ends the fleet `failed` too, with a result naming the sites it
   moved, never as a failed workflow (FAILURE_IN_RESULT), and so does a bug in its code (a plain Python
   exception, which would otherwise fail the workflow task for ever: BUG_IN_RESULT); a run ended with no result
   (terminated) has the rollback sync every site of the fleet;
4. the stage's `pause` and `analysis` steps, as TargetRolloutWorkflow walks them (pausable timers, `pause: {}`
   waits for a human, analysis looks with the share of updated sites as the canary weight).

Scale: a batch costs a handful of activities whatever its size, and the workflow continues as new after
every batch (and mid-walk when its history grows long), carrying the fleet and its progress, so no history
comes near Temporal's limits with 10,000 sites. The parent reaches every run of it: its `pause`, `resume`
and `abort` signals go to the workflow ID, and the new run inherits the flags they set. An abort cancels the
health checks in flight. Progress goes to the parent (`target_progress`) as each batch's health checks start
and on state changes (see rollout_control.PROGRESS_IN_RESULT), as a summary: counts per state and a capped
list of failed sites; the final summary is in the result.

Same input (`TargetRolloutInput`, extended only with what continue-as-new carries) and result
(`TargetRolloutResult`) as TargetRolloutWorkflow, so the delivery needs no special case.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from aicd import fleet
    from aicd.fleet import FleetFile, FleetTally, MovedSites, Site
    from aicd.messages import EDGE_FLEET_WORKFLOW, SYSTEM_ACTOR, RolloutOutcome, TargetStatus
    from aicd.steps import StepKind
    from aicd.workflows.common import cause_of
    from aicd.workflows.edge_batch import (
        BatchSites,
        FleetStop,
        batch_step,
        check_batch,
        commit_batch,
        fleet_of,
        read_fleet,
        restore_sites,
        site_count,
        sync_sites,
    )
    from aicd.workflows.rollout_control import (
        Aborted,
        RolloutControl,
        StepFailed,
        Superseded,
        TargetRolloutInput,
        TargetRolloutResult,
    )

# The patch after which the failed sites of an argocd fleet are synced to their restore commit (before it, they
# stayed synced to the batch's commit: running the release Git no longer gave them).
SYNC_RESTORED_SITES = "sync-restored-sites"
# The patch after which a fleet that raises a Temporal failure (ActivityError, ApplicationError, ...) ends with a
# failed result naming the sites it moved; before it, the run failed and the delivery learnt of no moved site.
FAILURE_IN_RESULT = "fleet-failure-in-result"
# The patch after which a bug in the fleet's code (a plain Python exception, no Temporal failure) ends the fleet
# failed with a result naming the sites it moved; before it, the workflow task failed and was retried for ever.
BUG_IN_RESULT = "fleet-bug-in-result"
# A run continues as new mid-walk past this many events; it also does after every batch.
CONTINUE_AS_NEW_EVENTS = 4_000


@dataclass
class FleetProgress:
    """Everything a run hands to the next one when it continues as new. A fleet file travels as its commit and
    size (`fleet`: the activities read its sites from Git); an inline fleet as plain names (and the few
    health URLs): decoding 10,000 dataclasses would take the workflow task seconds."""

    names: list[str]  # empty for a fleet file read by reference (`fleet`)
    health: dict[str, str]  # site -> health URL, only for sites that list one
    ends: list[int]  # cumulative end of each batch (aicd.fleet.batch_ends)
    budget: int  # failed sites tolerated in the whole fleet
    tally: FleetTally
    status: TargetStatus
    batch: int = 0  # index of the batch in progress
    step: int = -1  # -1: that batch is not committed yet; else the index of the next step to walk after it
    paused: bool = False
    pause_reason: str = ""
    aborted: bool = False
    abort_reason: str = ""
    next_actor: str = SYSTEM_ACTOR
    run: int = 1
    fleet: FleetFile | None = None  # the fleet file, whose sites the activities read from Git

    def sites(self, start: int, end: int) -> BatchSites:
        """The sites from `start` to `end` in fleet order: a slice of the fleet file, or the inline sites."""
        if self.fleet is not None:
            return self.fleet.slice(start, end)
        return [Site(name, self.health.get(name, "")) for name in self.names[start:end]]


@dataclass
class FleetInput(TargetRolloutInput):
    """What the delivery sends (a TargetRolloutInput); `progress` is set only by continue-as-new."""

    progress: FleetProgress | None = None

    @classmethod
    def of(cls, input: TargetRolloutInput) -> FleetInput:
        """What a delivery starts a fleet with: its rollout input, no progress yet."""
        return cls(**{f.name: getattr(input, f.name) for f in dataclasses.fields(TargetRolloutInput)})


@workflow.defn(name=EDGE_FLEET_WORKFLOW)
class EdgeFleetWorkflow(RolloutControl):
    @workflow.init
    def __init__(self, input: FleetInput) -> None:
        # Flags carried from the previous run first; signals to this run (handled after init) win.
        carried = input.progress
        self.input = input
        self.status = (
            carried.status if carried else TargetStatus(input.target.name, input.stage, input.target.kind)
        )
        self._init_control(
            paused=carried.paused if carried else input.paused,
            pause_reason=carried.pause_reason if carried else input.pause_reason,
            next_actor=carried.next_actor if carried else input.actor,
            aborted=carried.aborted if carried else False,
            abort_reason=carried.abort_reason if carried else "",
        )
        self.base = self.status.commits[-1] if self.status.commits else input.base
        # Sites before this index were moved by a batch's commit. A run starts between batches (or after its
        # batch was checked): every site its tally counts done, no more.
        self.moved_end = carried.tally.done if carried else 0

    # --- the fleet --------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: FleetInput) -> TargetRolloutResult:
        self._patch_reporting()
        # An error no step turned into an outcome (a non-retryable activity error, say) ends the fleet failed with
        # a result, which names the sites it moved - a failed workflow would tell the delivery none, and its
        # rollback would leave an argocd fleet's sites running the release - and so does a bug in its code.
        return await self._failed_with_a_result(
            self._run(input), "the fleet", bug_patch=BUG_IN_RESULT, failure_patch=FAILURE_IN_RESULT
        )

    async def _run(self, input: FleetInput) -> TargetRolloutResult:
        try:
            self.progress = input.progress or await self._start()
        except FleetStop as stop:
            return await self._finish("failed", str(stop))
        try:
            await self._walk()
        except Aborted:
            return await self._finish("aborted", self.abort_reason)
        except StepFailed as failure:
            return await self._finish("failed", str(failure))
        except Superseded as superseded:
            return await self._finish("superseded", str(superseded), superseded.by)
        tally = self.progress.tally
        reason = ""
        if tally.failed:
            reason = (
                f"{len(tally.failed)} of {tally.total} sites failed within maxFailures {self.progress.budget}"
                f" and stay on the previous version: {fleet.describe_sites(list(tally.failed))}"
            )
        return await self._finish("promoted", reason)

    async def _start(self) -> FleetProgress:
        self.status.state = "progressing"
        self.status.message = "reading the fleet"
        sites = await read_fleet(self.input)
        total = sites.total if isinstance(sites, FleetFile) else len(sites)
        try:
            settings = fleet_of(self.input)
            ends = fleet.batch_ends(total, settings.batches)
            budget = fleet.failure_budget(total, settings.max_failures)
        except fleet.FleetError as error:
            raise FleetStop(str(error)) from error
        tally = FleetTally(total=total)
        self.status.sites_total = total
        self.status.message = f"{total} sites in {len(ends)} batches; up to {budget} may fail"
        if isinstance(sites, FleetFile):
            progress = FleetProgress([], {}, ends, budget, tally, self.status, fleet=sites)
        else:
            health = {site.name: site.health for site in sites if site.health}
            progress = FleetProgress([site.name for site in sites], health, ends, budget, tally, self.status)
        self._summarise(progress)
        await self._report_step_done()  # the first batch's report follows at once
        return progress

    async def _walk(self) -> None:
        progress = self.progress
        steps = [step for step in self.input.steps if not step.moves_traffic]  # see the module docstring
        while progress.batch < len(progress.ends):
            if progress.step < 0:
                await self._batch(progress.batch)
                progress.step = 0
            while progress.step < len(steps):
                await self._step(steps[progress.step], progress.batch)
                progress.step += 1
                if workflow.info().get_current_history_length() > CONTINUE_AS_NEW_EVENTS:
                    await self._continue_as_new()
            progress.batch += 1
            progress.step = -1
            if progress.batch < len(progress.ends):
                await self._continue_as_new()  # one run per batch: every history stays a batch long

    async def _batch(self, index: int) -> None:
        progress = self.progress
        start, end = (progress.ends[index - 1] if index else 0), progress.ends[index]
        sites = progress.sites(start, end)
        count = site_count(sites)
        number, of = index + 1, len(progress.ends)
        await self._wait_unpaused()
        progress.tally.updating = count
        self.status.state = "progressing"
        self.status.step_index = -1
        self.status.step_kind = f"batch-{number}"
        self.status.message = f"batch {number}/{of}: {count} sites"
        self._summarise(progress)
        actor, self.next_actor = self.next_actor, SYSTEM_ACTOR
        committed = False
        try:
            sha = await self._guarded_write(
                lambda base: commit_batch(self.input, number, of, sites, actor, base)
            )
            committed = True
        except ActivityError as error:
            raise StepFailed(f"{batch_step(self.input, number)}: commit failed: {cause_of(error)}") from error
        finally:
            # Failed, aborted or superseded before Git had the batch: none of its sites moved.
            if not committed:
                progress.tally.updating = 0
                self._summarise(progress)
        self.base = sha
        self._add_commit(sha)
        self.moved_end = end
        if self.aborted:
            raise Aborted()
        self.status.message = f"batch {number}/{of}: {count} sites committed, checking their health"
        await self._report()  # health checks of Argo CD sites can take minutes: show the batch started
        budget_left = progress.budget - len(progress.tally.failed)
        step = batch_step(self.input, number)
        failed = await check_batch(self.input, step, sites, sha, budget_left, lambda: self.aborted)
        progress.tally.failed.update(failed)
        progress.tally.done = progress.ends[index]
        progress.tally.updating = 0
        self._summarise(progress)
        if len(progress.tally.failed) > progress.budget:
            names = list(progress.tally.failed)
            raise StepFailed(
                f"batch {number}/{of}: {len(names)} sites failed, more than maxFailures {progress.budget}:"
                f" {fleet.with_reasons(progress.tally.failed, names)}"
            )
        unsynced: dict[str, str] = {}
        if failed:
            restored = await restore_sites(self.input, number, list(failed))
            if restored is not None:
                self.base = restored
                self._add_commit(restored)
                if fleet_of(self.input).site_kind == "argocd" and workflow.patched(SYNC_RESTORED_SITES):
                    unsynced = await sync_sites(self.input, step, [Site(name) for name in failed], restored)
        self.status.message = f"batch {number}/{of} done: {count - len(failed)} sites updated" + (
            f", {len(failed)} failed and restored: {fleet.describe_sites(list(failed))}" if failed else ""
        )
        if unsynced:
            self.status.message += (
                f"; restored in Git but not synced back: {fleet.with_reasons(unsynced, list(unsynced))}"
            )
        await self._report_step_done()

    async def _finish(
        self, outcome: RolloutOutcome, reason: str, superseded_by: str = ""
    ) -> TargetRolloutResult:
        result = await super()._finish(outcome, reason, superseded_by)
        result.moved_sites = self._moved_sites()
        return result

    def _moved_sites(self) -> MovedSites | None:
        """The sites the batch commits of every run moved, for the delivery's rollback to put back."""
        if not self.moved_end:
            return None
        return MovedSites.of(self.progress.sites(0, self.moved_end))

    async def _continue_as_new(self) -> None:
        await self._flush_reports()  # the reports of this run reach the parent before it ends
        progress = self.progress
        progress.paused, progress.pause_reason = self.paused, self.pause_reason
        progress.aborted, progress.abort_reason = self.aborted, self.abort_reason
        progress.next_actor = self.next_actor
        progress.status = self.status
        progress.run += 1
        # The fleet travels in `progress`; an inline list in the target's config need not travel twice.
        target = dataclasses.replace(
            self.input.target, settings=fleet_of(self.input).without_sites(), config={}
        )
        fields = {f.name: getattr(self.input, f.name) for f in dataclasses.fields(TargetRolloutInput)}
        fields["target"] = target
        workflow.continue_as_new(FleetInput(**fields, progress=progress))

    # --- the stage's steps after a batch ---------------------------------------------------------
    async def _step(self, step: StepKind, batch: int) -> None:
        await self._wait_unpaused()
        self.status.step_index = step.index
        self.status.step_kind = step.name
        self.status.state = "progressing"
        self.status.message = f"after batch {batch + 1}/{len(self.progress.ends)}: {step.describe()}"
        await self._report()
        await step.run(self)

    async def commit(
        self,
        step_id: str,
        description: str,
        values: Mapping[str, Any],
        copies: Mapping[str, str] | None = None,
    ) -> None:
        # The walk skips the steps that move traffic, the only ones that commit: batches commit for a fleet.
        raise ApplicationError(f"{step_id}: a fleet commits per batch, not per step", non_retryable=True)

    def _analysis_position(self) -> str:
        return f" after batch {self.progress.batch + 1}"

    # --- status -----------------------------------------------------------------------------------
    def _summarise(self, progress: FleetProgress) -> None:
        self.status.sites_total = progress.tally.total
        self.status.sites_by_state = progress.tally.by_state()
        self.status.failed_sites = progress.tally.failed_names()
        self.status.weight = progress.tally.updated_percent()

    def _add_commit(self, sha: str) -> None:
        if sha not in self.status.commits:
            self.status.commits.append(sha)
