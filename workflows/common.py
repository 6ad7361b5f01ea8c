"""Timeouts and retry policies shared by the workflows: every activity call says how long it may take and
how it is retried; errors typed non-retryable stop at once."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

GIT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=20,
    non_retryable_error_types=["GitOpsFileInvalid", "GitOpsPathInvalid", "GitOpsFileMissing"],
)
SYNC_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=10,
    non_retryable_error_types=["TargetUnhealthy", "TargetConfigError"],
)
COMMAND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
    non_retryable_error_types=["CommandFailed", "CommandTimeout", "CommandInvalid"],
)
# A step's commit and sync in one activity: transient Git or API trouble retries; a definite answer does not.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=10,
    non_retryable_error_types=[*(GIT_RETRY.non_retryable_error_types or []), *(SYNC_RETRY.non_retryable_error_types or [])],
)
ANALYSIS_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=3,
)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)

GIT_TIMEOUT = timedelta(minutes=5)
GIT_HEARTBEAT = timedelta(seconds=10)
SYNC_HEARTBEAT = timedelta(seconds=15)
ANALYSIS_TIMEOUT = timedelta(minutes=2)
ANALYSIS_HEARTBEAT = timedelta(seconds=15)
NOTIFY_TIMEOUT = timedelta(seconds=30)
COMMAND_HEARTBEAT = timedelta(seconds=30)


def cause_of(error: BaseException) -> str:
    """The innermost cause's message: what an activity or child actually said."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error)
