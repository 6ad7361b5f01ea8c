"""Activity failures without secrets: every failure an activity raises reaches Temporal history (and the
worker's log, the status, Slack) with URL credentials and the worker's secret values redacted, down its
whole cause chain. The activities redact what they know to be sensitive themselves; this catches what they
do not (a git error quoting a remote URL, an exception's text)."""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from aicd.redact import SecretMask, redact


def redacted_failure(error: BaseException, mask: SecretMask | None) -> ApplicationError:
    """`error` and its causes as ApplicationErrors with redacted messages (types, retry and details kept)."""
    cause = redacted_failure(error.__cause__, mask) if error.__cause__ is not None else None
    if isinstance(error, ApplicationError):
        redacted = ApplicationError(
            redact(error.message, mask),
            *error.details,
            type=error.type,
            non_retryable=error.non_retryable,
            next_retry_delay=error.next_retry_delay,
            category=error.category,
        )
    else:  # what the SDK would make of it: the class name as the type, retryable
        redacted = ApplicationError(redact(str(error), mask), type=type(error).__name__)
    redacted.__cause__ = cause
    redacted.__suppress_context__ = True
    return redacted


class RedactFailures(Interceptor):
    def __init__(self, mask: SecretMask | None = None) -> None:
        self.mask = mask

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _RedactingInbound(next, self.mask)


class _RedactingInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, mask: SecretMask | None) -> None:
        super().__init__(next)
        self.mask = mask

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except CancelledError:
            raise
        except Exception as error:
            failure = redacted_failure(error, self.mask)
            raise failure from failure.__cause__  # the redacted chain, never the original one
