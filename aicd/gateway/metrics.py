"""The gateway's and the poller's metrics, served on `/metrics` through prometheus_client (one registry per
Gateway, so several gateways in one process - the tests - keep their own counts).

Every label value comes from a fixed set declared here (`LABEL_VALUES`); anything else is counted under
`other`. A request header or an exception's text can never make a new series, so the number of series
stays bounded whatever senders send. Every series of a fixed set exists from the start at zero, so a rate
or increase sees the first event too.
"""

from __future__ import annotations

import itertools
import re

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"

HELP = {
    "aicd_webhooks_received_total": "Git webhooks received, by provider.",
    "aicd_webhooks_refused_total": "Git webhooks refused, by provider and reason.",
    "aicd_webhooks_ignored_total": "Git webhooks that started nothing on purpose, by provider and reason.",
    "aicd_gateway_deliveries_started_total": "Deliveries started by the gateway or the poller, by trigger source.",
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
                "repeated_push",
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
    "aicd_gateway_deliveries_started_total": {"source": _SOURCES},
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
                "replayed_request",
                "malformed_payload",
                "malformed_action",
                "malformed_command",
                "other_workspace",
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
    """Counters and gauges by name with their declared labels (`inc`, `set`, `value`), rendered by `render`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._series: dict[str, Counter | Gauge] = {}
        for name, description in HELP.items():
            labels = sorted(LABEL_VALUES.get(name, {}))
            kind = Gauge if name in GAUGES else Counter
            # prometheus_client adds `_total` to a counter's name itself.
            metric = kind(name.removesuffix("_total"), description, labels, registry=self.registry)
            self._series[name] = metric
            if not labels:
                continue
            for values in itertools.product(*(sorted(LABEL_VALUES[name][label]) for label in labels)):
                metric.labels(*values)  # every fixed series from the start, at zero

    def _metric(self, name: str, labels: dict[str, str]) -> Counter | Gauge:
        metric = self._series[name]
        key = dict(bounded(name, labels))
        return metric.labels(**key) if key else metric

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._metric(name, labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        metric = self._metric(name, labels)
        assert isinstance(metric, Gauge), f"{name} is a counter"
        metric.set(value)

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, dict(bounded(name, labels)))
        return float(found) if found is not None else 0.0

    def render(self) -> str:
        return generate_latest(self.registry).decode()
