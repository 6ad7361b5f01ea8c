"""Running one verification run (aicd.verification) from a workflow: its attempts, the wait between them (a
durable timer that a pause stops), each attempt an activity - an HTTP check (aicd.activities.verification) or
the build's and tests' command runner (aicd.activities.commands). Shared by a target's `verify` steps and a
stage's `verify:` runs; the caller turns a failed run into a failed step or stage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from aicd.activities.commands import CommandActivities, CommandRequest, CommandResult
    from aicd.activities.verification import CheckResult, HttpCheckRequest, VerificationActivities
    from aicd.errors import ErrorType, names
    from aicd.messages import VerificationStatus
    from aicd.verification import Verification
    from aicd.workflows.common import COMMAND_HEARTBEAT, COMMAND_RETRY, application_cause, cancelled, cause_of

# An HTTP check is retried by the activity only for worker trouble; a check that answers wrong is a result.
HTTP_CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=names(ErrorType.COMMAND_INVALID, ErrorType.COMMAND_SECRET_MISSING),
)
# An attempt whose activity the workflow cancelled (an abort of a stage's `verify:`) ends the run: before, it
# counted as a failed attempt, and the next one ran after the abort.
CANCELLED_ATTEMPT_ENDS = "cancelled-attempt-ends"
# Definite answers about the run itself (it cannot run here): no further attempt can pass.
HOPELESS = frozenset({ErrorType.COMMAND_INVALID, ErrorType.COMMAND_SECRET_MISSING})


@dataclass
class VerificationContext:
    """Where a run's command runs: the delivery's source checkout at its revision."""

    delivery_id: str
    source_repo: str
    revision: str
    artifact: str
    label: str  # unique among the delivery's runs: names the command's log file


async def run_verification(
    run: Verification,
    context: VerificationContext,
    status: VerificationStatus,
    sleep: Callable[[float], Awaitable[None]],
    report: Callable[[], Awaitable[None]],
) -> bool:
    """Attempt `run` (placeholders filled) until one attempt passes or none is left; `status` shows each
    attempt. True when an attempt passed."""
    status.max_attempts = run.attempts
    # Decided before anything is cancelled: a marker recorded after the workflow's end fails its task too.
    ends_on_cancel = workflow.patched(CANCELLED_ATTEMPT_ENDS)
    try:
        for attempt in range(1, run.attempts + 1):
            if attempt > 1:
                status.state = "retrying"
                await report()
                await sleep(run.retry_interval_s)
            status.attempts = attempt
            status.state = "running"
            passed, hopeless = await _attempt(run, context, status, attempt, ends_on_cancel)
            if passed:
                status.state = "passed"
                await report()
                return True
            if hopeless:
                break
    except (ActivityError, asyncio.CancelledError):  # an abort cancelled the attempt or the wait for the next
        status.state = "cancelled"  # shown, not reported: a report now could come after the workflow's end
        raise
    status.state = "failed"
    await report()
    return False


async def _attempt(
    run: Verification,
    context: VerificationContext,
    status: VerificationStatus,
    attempt: int,
    ends_on_cancel: bool,
) -> tuple[bool, bool]:
    """(passed, hopeless) of one attempt; `status` gets its detail and output."""
    if run.http is not None:
        try:
            result: CheckResult = await workflow.execute_activity_method(
                VerificationActivities.http_check,
                HttpCheckRequest(run.name, run.http, run.timeout_s),
                start_to_close_timeout=timedelta(seconds=run.timeout_s + 30),
                retry_policy=HTTP_CHECK_RETRY,
            )
        except ActivityError as error:
            if ends_on_cancel and cancelled(error):
                raise
            status.detail = f"attempt {attempt}: {cause_of(error)}"
            return False, _hopeless(error)
        status.detail = f"attempt {attempt}: {result.detail} ({result.seconds:.1f}s)"
        status.output_tail = result.output_tail
        return result.passed, False
    request = CommandRequest(
        delivery_id=context.delivery_id,
        name=f"{context.label}-{attempt}",
        argv=list(run.argv),
        timeout_s=run.timeout_s,
        source_repo=context.source_repo,
        revision=context.revision,
        artifact=context.artifact,
        env=dict(run.env),
        secret_env=list(run.secret_env),
    )
    try:
        done: CommandResult = await workflow.execute_activity_method(
            CommandActivities.run_command,
            request,
            start_to_close_timeout=timedelta(seconds=run.timeout_s + 120),
            heartbeat_timeout=COMMAND_HEARTBEAT,
            retry_policy=COMMAND_RETRY,
        )
    except ActivityError as error:
        if ends_on_cancel and cancelled(error):
            raise
        cause = application_cause(error)
        failed = cause.details[0] if cause is not None and cause.details else None
        if isinstance(failed, dict):  # the CommandResult of a non-zero exit
            status.output_tail = str(failed.get("output_tail", ""))
            status.log = f"{failed.get('host', '')}:{failed.get('log_path', '')}".lstrip(":")
            status.detail = f"attempt {attempt}: exited with {failed.get('exit_code')}"
        elif cause is not None and cause.type == ErrorType.COMMAND_TIMEOUT:
            status.detail = f"attempt {attempt}: timed out after {run.timeout_s:g}s"
        else:
            status.detail = f"attempt {attempt}: {cause_of(error)}"
        return False, _hopeless(error)
    status.detail = f"attempt {attempt}: exit 0 ({done.seconds:.1f}s)"
    status.output_tail = done.output_tail
    status.log = f"{done.host}:{done.log_path}" if done.host else done.log_path
    return True, False


def _hopeless(error: ActivityError) -> bool:
    cause = application_cause(error)
    return cause is not None and cause.type in HOPELESS
