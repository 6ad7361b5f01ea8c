"""Activity results, failures and heartbeats without secrets: every failure an activity raises reaches Temporal
history (and the worker's log, the status, Slack) with URL credentials and the worker's secret values
redacted, down its whole cause chain, in messages and in the strings of their details (a failed command's
result); so do the strings of its result (an Argo CD message in a sync's details) and the details of its
heartbeats (`aicd status` shows the last one: an Argo CD message, git's reason for a refused push). The
activities redact what they know to be sensitive themselves; this catches what they do not (a git error
quoting a remote URL, an exception's text)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from temporalio.converter import AdvancedJSONEncoder
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from aicd.redact import SecretMask, redact, redactor


def redacted_details(value: Any, mask: SecretMask | None) -> Any:
    """`value` with every string in it redacted, through dicts, lists, tuples and dataclasses (kept as their
    types, so they serialise as before); any other object as the plain JSON Temporal would write for it."""
    return _redacted(value, redactor(mask), others_as_json=True)


def redacted_result(value: Any, mask: SecretMask | None) -> Any:
    """An activity's result with every string in it redacted, as `redacted_details`; other objects (a datetime,
    an enum) are kept as they are, for the workflow reads the result back as its declared type."""
    return _redacted(value, redactor(mask), others_as_json=False)


def _redacted(value: Any, redact_text: Callable[[str], str], others_as_json: bool) -> Any:
    if isinstance(value, str):
        redacted = redact_text(value)
        return value if redacted == value else redacted  # a str enum with nothing to hide stays one
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {
            _redacted(key, redact_text, others_as_json): _redacted(item, redact_text, others_as_json)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redacted(item, redact_text, others_as_json) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            field.name: _redacted(getattr(value, field.name), redact_text, others_as_json)
            for field in dataclasses.fields(value)
            if field.init
        }
        return dataclasses.replace(value, **fields)
    if not others_as_json:
        return value
    try:  # a pydantic model, a datetime, an enum: as the JSON converter would encode it
        plain = json.loads(json.dumps(value, cls=AdvancedJSONEncoder))
    except (TypeError, ValueError):
        return value  # not serialisable: Temporal refuses it anyway, and no text of it reaches history
    return _redacted(plain, redact_text, others_as_json)


def redacted_failure(error: BaseException, mask: SecretMask | None) -> ApplicationError:
    """`error` and its causes as ApplicationErrors with redacted messages and details (types, retry kept)."""
    cause = redacted_failure(error.__cause__, mask) if error.__cause__ is not None else None
    if isinstance(error, ApplicationError):
        redacted = ApplicationError(
            redact(error.message, mask),
            *(redacted_details(detail, mask) for detail in error.details),
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


class RedactActivityOutput(Interceptor):
    def __init__(self, mask: SecretMask | None = None) -> None:
        self.mask = mask

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _RedactingInbound(next, self.mask)


class _RedactingInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, mask: SecretMask | None) -> None:
        super().__init__(next)
        self.mask = mask

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_RedactingOutbound(outbound, self.mask))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return redacted_result(await super().execute_activity(input), self.mask)
        except CancelledError:
            raise
        except Exception as error:
            failure = redacted_failure(error, self.mask)
            raise failure from failure.__cause__  # the redacted chain, never the original one


class _RedactingOutbound(ActivityOutboundInterceptor):
    def __init__(self, next: ActivityOutboundInterceptor, mask: SecretMask | None) -> None:
        super().__init__(next)
        self.mask = mask

    def heartbeat(self, *details: Any) -> None:
        super().heartbeat(*(redacted_details(detail, self.mask) for detail in details))
