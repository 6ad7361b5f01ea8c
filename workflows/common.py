"""Timeouts and retry policies shared by the workflows: every activity call says how long it may take and
how it is retried; errors typed non-retryable stop at once."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TimeoutType,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from aicd.errors import ErrorType, names

WRITER_QUEUE_SUFFIX = "-gitops"


def writer_queue(queue: str) -> str:
    """The task queue of the GitOps writes of the workflows on `queue`. One worker of the fleet serves it at
    a time (`aicd worker --role gitops-writer`; the default role serves both), so adding workers adds room for
    workflows, commands, analysis and Argo CD waits without adding workers that race each other's pushes.
    Its writes are coalesced per clone (activities/gitops.py: group commit)."""
    return f"{queue}{WRITER_QUEUE_SUFFIX}"


def on_writer_queue() -> str:
    """The writer queue for a GitOps write scheduled by the running workflow."""
    return writer_queue(workflow.info().task_queue)


# A write refused by its ownership or fence check is a definite answer: retrying cannot change who owns a file.
WRITE_REFUSALS = names(
    ErrorType.GITOPS_FILE_INVALID,
    ErrorType.GITOPS_PATH_INVALID,
    ErrorType.GITOPS_FILE_MISSING,
    ErrorType.SUPERSEDED,
    ErrorType.HUMAN_EDIT,
    ErrorType.STALE_WRITE,
    ErrorType.WRITE_FENCED,
)

GIT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=20,
    non_retryable_error_types=WRITE_REFUSALS,
)
SYNC_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=10,
    non_retryable_error_types=names(ErrorType.TARGET_UNHEALTHY, ErrorType.TARGET_CONFIG_ERROR),
)
COMMAND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
    non_retryable_error_types=names(
        ErrorType.COMMAND_FAILED,
        ErrorType.COMMAND_TIMEOUT,
        ErrorType.COMMAND_INVALID,
        ErrorType.COMMAND_SECRET_MISSING,
    ),
)
# A step's commit and sync in one activity: transient Git or API trouble retries; a definite answer does not.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=10,
    non_retryable_error_types=[
        *(GIT_RETRY.non_retryable_error_types or []),
        *(SYNC_RETRY.non_retryable_error_types or []),
    ],
)
ANALYSIS_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=3,
)
# Claiming an app from older deliveries is best effort (Git ownership is the guarantee): a few tries.
CLAIM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)

# The gate activity reads Git, perhaps asks OPA or Prometheus; a failure after these attempts holds the stage
# (fail closed) and is asked again at the next recheck.
GATE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
GATE_TIMEOUT = timedelta(minutes=2)
# Incident hooks: retried for a while in the background; a refused event (4xx) is not.
INCIDENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=names(ErrorType.INCIDENT_REJECTED),
)
INCIDENT_TIMEOUT = timedelta(seconds=60)
# The audit sinks (a file, an HTTP endpoint): retried, never failing a delivery.
AUDIT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
AUDIT_TIMEOUT = timedelta(seconds=30)
GIT_TIMEOUT = timedelta(minutes=5)
GIT_HEARTBEAT = timedelta(seconds=10)
SYNC_HEARTBEAT = timedelta(seconds=15)
ANALYSIS_TIMEOUT = timedelta(minutes=2)
ANALYSIS_HEARTBEAT = timedelta(seconds=15)
NOTIFY_TIMEOUT = timedelta(seconds=30)
CLAIM_TIMEOUT = timedelta(seconds=60)
COMMAND_HEARTBEAT = timedelta(seconds=30)
# How long an activity for the worker that holds a delivery's checkout and reports (its host queue) waits for
# that worker to pick it up: a restarting pod is back within this; a worker that is gone is not waited for.
HOST_WAIT = timedelta(seconds=30)


def host_queue(queue: str, host: str, state_dir: str) -> str:
    """The task queue only the worker on `host` with this state directory serves: a delivery's later commands
    and its gate checks go there, where the build's checkout and reports are (Temporal's worker-specific
    task queue pattern). Several workers on one machine have their own state directories."""
    digest = hashlib.sha256(state_dir.encode()).hexdigest()[:8]
    return f"{queue}-host-{host}-{digest}"


def never_started(error: BaseException) -> bool:
    """The activity timed out waiting for a worker to pick it up (its schedule-to-start timeout)."""
    return isinstance(error, ActivityError) and (
        isinstance(error.cause, TemporalTimeoutError) and error.cause.type == TimeoutType.SCHEDULE_TO_START
    )


def cancelled(error: BaseException) -> bool:
    """The workflow cancelled the activity itself (its awaiting task was cancelled: an abort). Not a failed
    attempt: whatever a failure handler would schedule next would run after the abort, possibly in the task
    that completes the workflow (Core refuses that task: invalid command sequence)."""
    return isinstance(error, ActivityError) and isinstance(error.cause, CancelledError)


async def settle(task: asyncio.Future[Any]) -> None:
    """Cancel `task` (an activity, or tasks awaiting some) and wait until it has ended, its outcome dropped:
    the cancels it sends go before whatever the workflow does next, its end included."""
    task.cancel()
    await workflow.wait_condition(task.done)
    if not task.cancelled():
        task.exception()  # retrieved: the outcome of what was given up on is not a failure to log


def application_cause(error: BaseException) -> ApplicationError | None:
    """The ApplicationError an activity or child raised, found through the wrapping errors."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, ApplicationError) and current.type:
            return current
        current = current.__cause__
    return None


def cause_of(error: BaseException) -> str:
    """What an activity or child said: aicd's own message (the outermost application error, which names the
    repository, target or step), then what caused it when that adds something (`message: cause`)."""
    messages: list[str] = []
    current: BaseException | None = error
    while current is not None:
        if not isinstance(current, (ActivityError, ChildWorkflowError)):  # wrappers say nothing of their own
            text = str(getattr(current, "message", "") or current).strip()
            if text and not any(text in known for known in messages):
                messages.append(text)
        current = current.__cause__
    return ": ".join(messages[:2]) or str(error)


def describe_bug(error: BaseException) -> str:
    """`KeyError: 'x' (edge_batch.py:123)`: the exception and where it was raised (the innermost frame; read from
    the traceback object, no source file read in the sandbox)."""
    where = ""
    frame = error.__traceback__
    if frame is not None:
        while frame.tb_next is not None:
            frame = frame.tb_next
        where = f" ({frame.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.tb_lineno})"
    return f"{type(error).__name__}: {error}{where}"
