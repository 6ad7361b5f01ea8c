"""One batch of an edge fleet, as workflow code (no I/O: every side effect is an activity): read the fleet,
commit a batch (one commit, one file edit per site), check its sites' health through a sliding window of
chunked `edge_check_sites` activities, and restore the failed sites of a batch (one commit).

A fleet file is read by the worker (`gitops_read_fleet`): the workflow learns its commit and its size, and
batches and chunks name slices of it (aicd.fleet.FleetSlice) that the activities read back from Git, so
no payload or history grows with the fleet. An inline list of sites is in the spec already and travels as
names."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from aicd import fleet
    from aicd.activities.edge import EdgeActivities, SiteHealthRequest
    from aicd.activities.gitops import CommitRequest, FileEdit, GitOpsActivities, RollbackRequest
    from aicd.errors import ErrorType, names
    from aicd.fleet import FleetFile, FleetSlice, Site
    from aicd.messages import SYSTEM_ACTOR
    from aicd.targets.edge import EdgeTarget, SitesFile
    from aicd.trailers import delivery_trailer, step_trailer
    from aicd.workflows.common import (
        GIT_HEARTBEAT,
        GIT_RETRY,
        GIT_TIMEOUT,
        SYNC_HEARTBEAT,
        application_cause,
        cancelled,
        cause_of,
        on_writer_queue,
    )
    from aicd.workflows.rollout_control import Aborted, StepFailed, TargetRolloutInput

# A chunk's sites are checked `parallelism` at a time; a transient error (API down) retries the chunk.
SITES_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=5,
    non_retryable_error_types=names(ErrorType.FLEET_CONFIG_ERROR),
)


# Fleet files read by reference (gitops_read_fleet) instead of as text through history (gitops_read_file).
FLEET_BY_REFERENCE = "fleet-file-by-reference"
# A chunk's check cancelled (an abort, a failing fleet) ends there. Before, it was read as a failed check and
# scheduled the reading of its sites' names: after an abort, in the task that completes the workflow (an
# invalid command sequence that fails the task) or, after a failing fleet, one needless activity.
CANCELLED_CHECK_ENDS = "cancelled-check-ends"
# A batch's sites: names (an inline fleet, or a run that read its file as text) or a slice of the fleet file.
BatchSites = list[Site] | FleetSlice


def site_count(sites: BatchSites) -> int:
    return sites.count if isinstance(sites, FleetSlice) else len(sites)


class FleetStop(Exception):
    """The fleet cannot start (fleet file missing or invalid); the reason is the target's failure."""


def fleet_of(input: TargetRolloutInput) -> EdgeTarget:
    """The fleet's typed config (an edge target: the delivery starts this workflow for no other kind)."""
    settings = input.target.typed()
    if not isinstance(settings, EdgeTarget):
        raise FleetStop(f"target {input.target.name} of kind {input.target.kind} is not a fleet")
    return settings


def batch_step(input: TargetRolloutInput, number: int) -> str:
    return step_trailer(input.stage, input.target.name, f"batch-{number}")


async def read_fleet(input: TargetRolloutInput) -> list[Site] | FleetFile:
    """The sites inline in the target, or the YAML list in the GitOps repository as a FleetFile (read at the
    branch head once, when the fleet starts: a fleet file edited mid-delivery does not reshuffle the
    batches)."""
    sites = fleet_of(input).sites
    try:
        if not isinstance(sites, SitesFile):
            return fleet.sites_from_list(sites, f"targets.{input.target.name}.sites")
        if workflow.patched(FLEET_BY_REFERENCE):
            return await workflow.execute_activity_method(
                GitOpsActivities.read_fleet,
                args=[input.gitops_repo, input.gitops_branch, sites.file],
                start_to_close_timeout=GIT_TIMEOUT,
                retry_policy=GIT_RETRY,
            )
        text = await workflow.execute_activity_method(
            GitOpsActivities.read_file,
            args=[input.gitops_repo, input.gitops_branch, sites.file],
            start_to_close_timeout=GIT_TIMEOUT,  # no heartbeat timeout: the read (a first clone) does not beat
            retry_policy=GIT_RETRY,
        )
        return fleet.parse_fleet(text, sites.file)
    except ActivityError as error:
        cause = application_cause(error)
        if cause is not None and cause.type == ErrorType.FLEET_CONFIG_ERROR:  # read, and not a fleet
            raise FleetStop(cause.message) from error
        raise FleetStop(f"cannot read the fleet: {cause_of(error)}") from error
    except fleet.FleetError as error:
        raise FleetStop(str(error)) from error


async def commit_batch(
    input: TargetRolloutInput, number: int, of: int, sites: BatchSites, actor: str, base: str | None
) -> str:
    """One commit moving every site of the batch: `write.image` = the artifact tag in each site's file.
    Sites are promoted directly; a canary weight means nothing on a single site. Raises ActivityError (the
    caller decides what a refused write means)."""
    request = CommitRequest(
        repo=input.gitops_repo,
        branch=input.gitops_branch,
        delivery=delivery_trailer(input.app, input.revision),
        step=batch_step(input, number),
        actor=actor,
        subject=f"aicd: {input.app} {input.revision_short} {input.target.name} batch {number}/{of} ({site_count(sites)} sites)",
        edits=[
            FileEdit(
                input.target.path,
                {input.write.image: input.artifact_tag},
                sites=[site.name for site in sites] if isinstance(sites, list) else [],
                fleet_sites=sites if isinstance(sites, FleetSlice) else None,
            )
        ],
        delivery_id=input.delivery_id,
        started=input.delivery_started,
        base=base,
    )
    commit = await workflow.execute_activity_method(
        GitOpsActivities.commit,
        request,
        task_queue=on_writer_queue(),
        start_to_close_timeout=GIT_TIMEOUT,
        heartbeat_timeout=GIT_HEARTBEAT,
        retry_policy=GIT_RETRY,
    )
    assert commit.sha is not None
    return commit.sha


async def check_batch(
    input: TargetRolloutInput,
    step: str,
    sites: BatchSites,
    sha: str,
    budget_left: int,
    aborted: Callable[[], bool],
) -> dict[str, str]:
    """Failed sites of the batch (site -> why), in fleet order. A sliding window of chunk activities keeps
    at most `parallelism` sites in check at once. Stops early - cancelling the chunks in flight - on abort
    (raises Aborted) or as soon as the failures exceed what the fleet's budget has left."""
    config = fleet_of(input).without_sites()
    parallelism = config.parallelism
    size = fleet.chunk_size(site_count(sites))
    window = max(1, parallelism // size)
    per_chunk = min(parallelism, size)
    deadline_s = input.target.progress_deadline_s
    timeout = timedelta(seconds=deadline_s * math.ceil(size / per_chunk) + 120)
    # Decided before anything is cancelled: a marker recorded after the workflow's end fails its task too.
    cancelled_check_ends = workflow.patched(CANCELLED_CHECK_ENDS)

    async def check(chunk: BatchSites) -> dict[str, str]:
        request = SiteHealthRequest(
            delivery_id=input.delivery_id,
            stage=input.stage,
            target=input.target.name,
            site_kind=config.site_kind,
            settings=config,
            path=input.target.path,
            gitops_repo=input.gitops_repo,
            gitops_branch=input.gitops_branch,
            revision=sha,
            step=step,
            sites=chunk if isinstance(chunk, list) else [],
            parallelism=per_chunk,
            timeout_s=deadline_s,
            fleet_sites=chunk if isinstance(chunk, FleetSlice) else None,
        )
        try:
            result = await workflow.execute_activity_method(
                EdgeActivities.check_sites,
                request,
                start_to_close_timeout=timeout,
                heartbeat_timeout=SYNC_HEARTBEAT,
                retry_policy=SITES_RETRY,
            )
        except ActivityError as error:  # unknown health is no health
            if cancelled_check_ends and cancelled(error):
                raise
            why = f"health check failed: {cause_of(error)}"[:300]
            return {name: why for name in await _names(input, chunk)}
        return result.failed

    chunks: list[BatchSites] = [
        *(sites.chunks(size) if isinstance(sites, FleetSlice) else fleet.chunked(sites, size))
    ]
    waiting = deque(enumerate(chunks))
    running: dict[int, asyncio.Task[dict[str, str]]] = {}
    failed_by_chunk: dict[int, dict[str, str]] = {}
    while waiting or running:
        while waiting and len(running) < window:
            index, chunk = waiting.popleft()
            running[index] = asyncio.ensure_future(check(chunk))
        await workflow.wait_condition(lambda: aborted() or any(task.done() for task in running.values()))
        if aborted():
            _cancel(list(running.values()))
            raise Aborted()
        for index, task in [(index, task) for index, task in running.items() if task.done()]:
            del running[index]
            failed_by_chunk[index] = task.result()
        if sum(map(len, failed_by_chunk.values())) > budget_left:  # the fleet is failing: stop checking
            _cancel(list(running.values()))
            break
    # In fleet order: chunk by chunk, each chunk's failures as its activity listed them (in fleet order).
    return {name: why for index in sorted(failed_by_chunk) for name, why in failed_by_chunk[index].items()}


async def sync_sites(input: TargetRolloutInput, step: str, sites: BatchSites, sha: str) -> dict[str, str]:
    """Each site's Argo CD Application synced to `sha`, a commit that put the sites back on their previous version
    (a batch's restore, the delivery's rollback): Argo CD runs what it was last synced to - the batch's commit -
    so without this the sites keep running the release that Git and the status say they no longer have. Every
    site is tried, none aborts it. Returns the sites that did not come back healthy (site -> why)."""
    return await check_batch(input, step, sites, sha, site_count(sites), lambda: False)


async def _names(input: TargetRolloutInput, sites: BatchSites) -> list[str]:
    if isinstance(sites, list):
        return [site.name for site in sites]
    return await workflow.execute_activity_method(
        GitOpsActivities.read_fleet_names,
        args=[input.gitops_repo, input.gitops_branch, sites],
        start_to_close_timeout=GIT_TIMEOUT,
        retry_policy=GIT_RETRY,
    )


async def restore_sites(input: TargetRolloutInput, number: int, failed: list[str]) -> str | None:
    """One commit putting the batch's failed sites back on the files they had before this delivery."""
    step = f"{batch_step(input, number)}-restore"
    request = RollbackRequest(
        repo=input.gitops_repo,
        branch=input.gitops_branch,
        delivery=delivery_trailer(input.app, input.revision),
        step=step,
        actor=SYSTEM_ACTOR,
        subject=f"aicd: {input.app} {input.revision_short} {input.target.name} batch {number}: restore {len(failed)} failed sites",
        paths=[fleet.site_path(input.target.path, name) for name in failed],
        reason=f"failed sites stay on the previous version: {fleet.describe_sites(failed, cap=100)}",
        delivery_id=input.delivery_id,
        started=input.delivery_started,
    )
    try:
        result = await workflow.execute_activity_method(
            GitOpsActivities.rollback,
            request,
            task_queue=on_writer_queue(),
            start_to_close_timeout=GIT_TIMEOUT,
            heartbeat_timeout=GIT_HEARTBEAT,
            retry_policy=GIT_RETRY,
        )
    except ActivityError as error:
        raise StepFailed(f"{step}: restoring failed sites failed: {cause_of(error)}") from error
    return result.sha


def _cancel(tasks: list[asyncio.Task[dict[str, str]]]) -> None:
    for task in tasks:
        task.cancel()
