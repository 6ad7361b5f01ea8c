"""Counters of the gateway in Prometheus text exposition format (version 0.0.4); no client library needed
for a handful of labelled counters."""

from __future__ import annotations

import threading
from collections import defaultdict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HELP = {
    "aicd_webhooks_received_total": "Git webhooks received, by provider.",
    "aicd_webhooks_refused_total": "Git webhooks refused or ignored, by provider and reason.",
    "aicd_deliveries_started_total": "Deliveries started by the gateway or the poller, by trigger source.",
    "aicd_deliveries_already_started_total": "Triggers that found their delivery already started, by source.",
    "aicd_slack_requests_refused_total": "Slack requests refused before acting, by endpoint and reason.",
    "aicd_slack_actions_total": "Slack buttons and commands acted on, by kind and outcome.",
    "aicd_specs_loaded": "Valid delivery specs served.",
    "aicd_spec_errors": "Spec files that failed to load.",
}
GAUGES = frozenset({"aicd_specs_loaded", "aicd_spec_errors"})


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

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
