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
    # Targets: a driver's definite answers (Degraded, a deadline; a missing app, forbidden, a bad kubeconfig).
    TARGET_UNHEALTHY = "TargetUnhealthy"
    TARGET_CONFIG_ERROR = "TargetConfigError"
    FLEET_CONFIG_ERROR = "FleetConfigError"  # an edge fleet's site kind or app template cannot work
    # Build, test and provision commands.
    COMMAND_FAILED = "CommandFailed"  # non-zero exit: the release is bad, not the worker
    COMMAND_TIMEOUT = "CommandTimeout"
    COMMAND_INVALID = "CommandInvalid"  # nothing to run (an empty argv, a program not found)
    COMMAND_SECRET_MISSING = "CommandSecretMissing"  # a secretEnv name the worker does not hold
    SOURCE_UNAVAILABLE = "SourceUnavailable"  # the revision cannot be checked out
    # Notifications: Slack down or rate limiting (retried; a delivery never fails for it).
    SLACK_UNAVAILABLE = "SlackUnavailable"
    # Incident hooks (PagerDuty, webhooks): refused (a bad routing key, a 4xx) or unreachable (retried).
    INCIDENT_REJECTED = "IncidentRejected"
    INCIDENT_UNAVAILABLE = "IncidentUnavailable"
    AUDIT_SINK_UNAVAILABLE = "AuditSinkUnavailable"  # the audit file or HTTP sink (retried)


def names(*types: ErrorType) -> list[str]:
    """For RetryPolicy.non_retryable_error_types."""
    return [str(error_type) for error_type in types]
