"""Counters of the gateway in Prometheus text exposition format (version 0.0.4); no client library needed
for a handful of labelled counters.

Every label value comes from a fixed set declared here (`LABEL_VALUES`); anything else is counted under
`other`. A request header or an exception's text can never make a new series, so the number of series
stays bounded whatever senders send.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"

HELP = {
    "aicd_webhooks_received_total": "Git webhooks received, by provider.",
    "aicd_webhooks_refused_total": "Git webhooks refused, by provider and reason.",
    "aicd_webhooks_ignored_total": "Git webhooks that started nothing on purpose, by provider and reason.",
    "aicd_deliveries_started_total": "Deliveries started by the gateway or the poller, by trigger source.",
    "aicd_deliveries_already_started_total": "Triggers that found their delivery already started, by source.",
    "aicd_slack_requests_refused_total": "Slack requests refused before acting, by endpoint and reason.",
    "aicd_slack_actions_total": "Slack buttons and commands acted on, by kind and outcome.",
    "aicd_poller_refs_refused_total": "Branch heads the poller skipped because Git refuses their names.",
    "aicd_specs_loaded": "Valid delivery specs served.",
    "aicd_spec_errors": "Spec files that failed to load.",
}
GAUGES = frozenset({"aicd_specs_loaded", "aicd_spec_errors"})

_PROVIDERS = frozenset({"github", "gitlab"})
_SOURCES = frozenset({"github", "gitlab", "poller"})
LABEL_VALUES: dict[str, dict[str, frozenset[str]]] = {
    "aicd_webhooks_received_total": {"provider": _PROVIDERS},
    "aicd_webhooks_refused_total": {
        "provider": _PROVIDERS,
        "reason": frozenset(
            {
                "webhook_secret_not_configured",
                "webhook_token_not_configured",
                "body_too_large",
                "missing_x_hub_signature_256",
                "unsupported_signature_scheme",
                "bad_signature",
                "missing_x_gitlab_token",
                "bad_token",
                "replayed",
                "malformed_json",
                "malformed_push",
                "invalid_ref",
                "after_is_not_a_commit_sha",
                "unknown_revision",
                "cannot_read_the_source_repository_now",
                "cannot_start_the_delivery_now",
            }
        ),
    },
    "aicd_webhooks_ignored_total": {
        "provider": _PROVIDERS,
        "reason": frozenset(
            {
                "not_a_push",
                "not_a_branch",
                "branch_deleted",
                "no_spec_for_this_repository_and_branch",
                "stale",
            }
        ),
    },
    "aicd_deliveries_started_total": {"source": _SOURCES},
    "aicd_deliveries_already_started_total": {"source": _SOURCES},
    "aicd_slack_requests_refused_total": {
        "endpoint": frozenset({"interactions", "commands"}),
        "reason": frozenset(
            {
                "slack_signing_secret_not_configured",
                "body_too_large",
                "missing_x_slack_request_timestamp_or_x_slack_signature",
                "malformed_timestamp",
                "stale_timestamp",
                "bad_signature",
                "malformed_payload",
                "malformed_action",
                "malformed_command",
            }
        ),
    },
    "aicd_slack_actions_total": {
        "kind": frozenset({"approve", "reject", "pause", "resume", "abort", "status", "help"}),
        "via": frozenset({"button", "command"}),
        "outcome": frozenset({"accepted", "ok", "refused", "error"}),
    },
    "aicd_poller_refs_refused_total": {},
}


def reason_label(reason: str) -> str:
    """The label of a refusal's one-line reason: its fixed part, before any ':' or ';' (the variable part,
    such as a parser's message, never becomes a label)."""
    return re.sub(r"[^a-z0-9]+", "_", re.split(r"[:;]", reason)[0].lower()).strip("_")


def bounded(name: str, labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The series key of `labels`: label names as declared for `name`, values from their fixed sets (else
    `other`)."""
    declared = LABEL_VALUES.get(name, {})
    if set(labels) != set(declared):
        raise ValueError(f"{name} has labels {sorted(declared)}, not {sorted(labels)}")
    return tuple(
        sorted((label, value if value in declared[label] else OTHER) for label, value in labels.items())
    )


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = bounded(name, labels)
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        key = bounded(name, labels)
        with self._lock:
            self._values[name][key] = value

    def value(self, name: str, **labels: str) -> float:
        key = bounded(name, labels)
        with self._lock:
            return self._values.get(name, {}).get(key, 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(set(HELP) | set(self._values)):
                lines.append(f"# HELP {name} {HELP.get(name, name)}")
                lines.append(f"# TYPE {name} {'gauge' if name in GAUGES else 'counter'}")
                for key, value in sorted(self._values.get(name, {}).items()):
                    labels = ",".join(f'{label}="{_escape(text)}"' for label, text in key)
                    lines.append(f"{name}{{{labels}}} {value:g}" if labels else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
