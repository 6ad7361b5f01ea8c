"""What a failure reason says: aicd's own message first (it names the repository, target or step), then the
cause when it adds something, never the wrappers' words; a bug names its exception and where it was raised."""

from __future__ import annotations

from itertools import pairwise

from temporalio.api.enums.v1 import RetryState
from temporalio.exceptions import ActivityError, ApplicationError

from aicd.workflows.common import cause_of, describe_bug


def chain(*errors: BaseException) -> BaseException:
    for outer, inner in pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


def activity_error() -> ActivityError:
    return ActivityError(
        "Activity task failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker",
        activity_type="run_command",
        activity_id="1",
        retry_state=RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE,
    )


def test_aicd_message_first_then_the_cause() -> None:
    error = chain(
        activity_error(),
        ApplicationError("cannot check out 4f2c1d9 of https://git.example/app.git", type="SourceUnavailable"),
        ApplicationError("fatal: reference is not a tree: 4f2c1d9", type="GitCommandError"),
    )
    assert (
        cause_of(error)
        == "cannot check out 4f2c1d9 of https://git.example/app.git: fatal: reference is not a tree: 4f2c1d9"
    )


def test_a_cause_already_in_the_message_is_not_repeated() -> None:
    error = chain(
        activity_error(), ApplicationError("values.yaml: mapping expected"), ValueError("mapping expected")
    )
    assert cause_of(error) == "values.yaml: mapping expected"
    assert cause_of(ApplicationError("plain")) == "plain"


def test_a_bug_names_its_exception_and_the_innermost_frame() -> None:
    def inner() -> None:
        raise KeyError("weight")

    try:
        inner()
    except KeyError as error:
        raised = error.__traceback__.tb_next if error.__traceback__ is not None else None
        assert raised is not None
        line = raised.tb_lineno
        assert describe_bug(error) == f"KeyError: 'weight' (test_workflow_common.py:{line})"
    assert describe_bug(ValueError("never raised")) == "ValueError: never raised"
