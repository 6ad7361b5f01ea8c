"""The types of the errors activities raise (ApplicationError.type) and workflows react to: one enumeration
used on both sides, so a name can never be spelled two ways."""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    # GitOps writes: configuration and content problems that no retry fixes.
    GITOPS_FILE_INVALID = "GitOpsFileInvalid"
    GITOPS_PATH_INVALID = "GitOpsPathInvalid"
    GITOPS_FILE_MISSING = "GitOpsFileMissing"
    GITOPS_UNREACHABLE = "GitOpsUnreachable"
    # Ownership of a target's file, decided from Git at write time (see aicd.trailers).
    SUPERSEDED = "Superseded"  # a newer delivery of the app wrote the file: this delivery stops
    HUMAN_EDIT = "HumanEdit"  # a commit without aicd trailers changed the file since this delivery wrote it
    STALE_WRITE = "StaleWrite"  # a later write of this same delivery already landed: this one is late
    WRITE_FENCED = "WriteFenced"  # this activity attempt is no longer the current one (timed out, cancelled)
    # Targets.
    TARGET_UNHEALTHY = "TargetUnhealthy"
    TARGET_CONFIG_ERROR = "TargetConfigError"


def names(*types: ErrorType) -> list[str]:
    """For RetryPolicy.non_retryable_error_types."""
    return [str(error_type) for error_type in types]
