"""aicd's metric families and the one registry the worker's `/metrics` serves.

Every label value comes from a fixed set (phases, step kinds, outcomes, error types) or from validated
configuration (app names, analysis metric names), never from request text. Configuration-derived values are
bounded as well: the first `max_values` distinct values keep their own series and later ones share
`other`, so a directory of thousands of specs cannot blow up the series count of a Prometheus.

Names follow Prometheus' conventions: counters end in `_total`, durations are `_seconds` histograms, gauges
name what they count. The Temporal SDK's own runtime metrics (`temporal_*`: pollers, task slots, schedule-
to-start and execution latencies, request failures) are served by the SDK's Prometheus exporter on a
loopback port and folded into the same answer by `TemporalRuntimeMetrics`, so one scrape gets both.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from aicd.errors import ErrorType
from aicd.judge.model import MetricOutcome, Outcome
from aicd.messages import PHASES, TERMINAL_PHASES

log = logging.getLogger(__name__)

OTHER = "other"  # the shared value of a label past its bound, or outside its fixed set

# Fixed label sets.
ENDED_PHASES = tuple(phase for phase in PHASES if phase in TERMINAL_PHASES)
# Deliveries in flight by phase; `unknown` counts running deliveries without the AicdPhase search attribute.
IN_FLIGHT_PHASES = (*(phase for phase in PHASES if phase not in TERMINAL_PHASES), "unknown")
STEP_KINDS = ("setWeight", "promote", "rollback", "command")
TARGET_KINDS = ("git", "argocd", "edge", "local")
STEP_OUTCOMES = ("ok", "error")
TARGET_OUTCOMES = ("promoted", "failed", "aborted", "superseded")
ANALYSIS_OUTCOMES = tuple(str(outcome) for outcome in Outcome if outcome != Outcome.RUNNING)
METRIC_VERDICTS = tuple(str(outcome) for outcome in MetricOutcome)
ROLLBACK_SCOPES = ("target", "stage", "release")
ROLLBACK_REASONS = ("failed", "aborted", "superseded")  # the phase the delivery ended in
# Why a GitOps write did not land: the error types of the GitOps activities, or `error` for anything else.
WRITE_REFUSALS = (
    *(str(kind) for kind in ErrorType if kind.name.startswith("GITOPS_")),
    *(
        str(kind)
        for kind in (
            ErrorType.SUPERSEDED,
            ErrorType.HUMAN_EDIT,
            ErrorType.STALE_WRITE,
            ErrorType.WRITE_FENCED,
        )
    ),
    "error",
)

# Bounds of configuration-derived label values.
DEFAULT_MAX_APPS = 500
DEFAULT_MAX_ANALYSIS_METRICS = 200
APP_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # what a spec's metadata.name may be
METRIC_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")

STEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
ANALYSIS_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
DELIVERY_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0, 259200.0)


def one_of(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


class BoundedValues:
    """Label values taken from validated configuration: well-formed values keep their own series until
    `limit` distinct ones have been seen; later ones, and malformed ones, are `other`."""

    def __init__(self, limit: int, pattern: re.Pattern[str]) -> None:
        self.limit = limit
        self.pattern = pattern
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, value: str) -> str:
        if not self.pattern.match(value):
            return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
            if not self._warned:
                self._warned = True
                log.warning(
                    "more than %d distinct label values (%s...): the rest are counted as %r",
                    self.limit,
                    value,
                    OTHER,
                )
            return OTHER


class AicdMetrics:
    """aicd's own metric families on `registry`, and the one place that turns observations into samples."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_apps: int = DEFAULT_MAX_APPS,
        max_analysis_metrics: int = DEFAULT_MAX_ANALYSIS_METRICS,
    ) -> None:
        self.registry = registry
        self.apps = BoundedValues(max_apps, APP_PATTERN)
        self.analysis_metrics = BoundedValues(max_analysis_metrics, METRIC_NAME_PATTERN)
        self.build_info = Gauge(
            "aicd_build_info", "aicd version of this process (always 1).", ["version"], registry=registry
        )
        self.build_info.labels(version=_version()).set(1)
        self.deliveries_started = Counter(
            "aicd_deliveries_started_total",
            "Deliveries that began running on this worker, by app.",
            ["app"],
            registry=registry,
        )
        self.deliveries_ended = Counter(
            "aicd_deliveries_ended_total",
            "Deliveries that ended, by app and terminal phase.",
            ["app", "phase"],
            registry=registry,
        )
        self.delivery_duration = Histogram(
            "aicd_delivery_duration_seconds",
            "Time from a delivery's start to its end, by terminal phase.",
            ["phase"],
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "aicd_deliveries_in_flight",
            "Running deliveries on this task queue by phase, as Temporal's visibility store counts them "
            "(every worker reports the same numbers: aggregate with max, not sum).",
            ["phase"],
            registry=registry,
        )
        self.approvals_waiting = Gauge(
            "aicd_approvals_waiting",
            "Running deliveries waiting at an approval gate (the awaiting-approval phase; aggregate with max).",
            registry=registry,
        )
        self.target_rollouts = Counter(
            "aicd_target_rollouts_total",
            "Target rollouts (one target of one stage) that ended, by target kind and outcome.",
            ["target_kind", "outcome"],
            registry=registry,
        )
        self.step_duration = Histogram(
            "aicd_step_duration_seconds",
            "Duration of a step the worker executes: a canary weight or promotion (commit, push, sync and "
            "wait for health), a rollback commit, a build/test/provision command; by outcome.",
            ["kind", "target_kind", "outcome"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.analysis_duration = Histogram(
            "aicd_analysis_duration_seconds",
            "Time an analysis step took to reach its verdict, by outcome.",
            ["outcome"],
            buckets=ANALYSIS_BUCKETS,
            registry=registry,
        )
        self.analysis_verdicts = Counter(
            "aicd_analysis_verdicts_total",
            "Each metric's verdict in a decided analysis (the final look, or the look that failed it), by "
            "analysis metric name and verdict.",
            ["metric", "outcome"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "aicd_rollbacks_total",
            "Deliveries that rolled targets back, by app, rollback scope and why (the phase it ended in).",
            ["app", "scope", "reason"],
            registry=registry,
        )
        self.push_retries = Counter(
            "aicd_gitops_push_retries_total",
            "GitOps pushes the remote rejected because another writer pushed first; aicd refetched, re-applied "
            "and pushed again (counted on writes that then landed).",
            registry=registry,
        )
        self.writes_refused = Counter(
            "aicd_gitops_writes_refused_total",
            "GitOps writes that did not land, by error type (ownership and fence refusals, invalid files, an "
            "unreachable remote; `error` for anything else, a push still rejected after every retry included).",
            ["reason"],
            registry=registry,
        )
        self.sites_checked = Counter(
            "aicd_fleet_sites_checked_total",
            "Edge fleet sites whose health was checked, by app.",
            ["app"],
            registry=registry,
        )
        self.sites_failed = Counter(
            "aicd_fleet_sites_failed_total",
            "Edge fleet sites that failed their check, by app.",
            ["app"],
            registry=registry,
        )
        # Fixed-set families start at zero, so rates and alerts have a series before the first event (a series
        # whose first sample already counts one event shows no increase).
        self.push_retries.inc(0)
        for reason in WRITE_REFUSALS:
            self.writes_refused.labels(reason=reason).inc(0)
        for phase in IN_FLIGHT_PHASES:
            self.in_flight.labels(phase=phase).set(0)
        for phase in ENDED_PHASES:
            self.delivery_duration.labels(phase=phase)
        for outcome in ANALYSIS_OUTCOMES:
            self.analysis_duration.labels(outcome=outcome)

    # --- observations ---------------------------------------------------------------------------
    def delivery_started(self, app: str, rollback_scope: str) -> None:
        label = self.apps(app)
        self.deliveries_started.labels(app=label).inc()
        # The app's end and rollback series exist at zero from now on: a counter whose first sample is
        # already 1 shows no increase(), and an alert on the first rollback of an app would never fire.
        for phase in ENDED_PHASES:
            self.deliveries_ended.labels(app=label, phase=phase).inc(0)
        for reason in ROLLBACK_REASONS:
            self.rollbacks.labels(
                app=label, scope=one_of(rollback_scope, ROLLBACK_SCOPES), reason=reason
            ).inc(0)

    def delivery_ended(self, app: str, phase: str, seconds: float) -> None:
        phase = one_of(phase, ENDED_PHASES)
        self.deliveries_ended.labels(app=self.apps(app), phase=phase).inc()
        self.delivery_duration.labels(phase=phase).observe(max(seconds, 0.0))

    def rolled_back(self, app: str, scope: str, reason: str) -> None:
        self.rollbacks.labels(
            app=self.apps(app), scope=one_of(scope, ROLLBACK_SCOPES), reason=one_of(reason, ROLLBACK_REASONS)
        ).inc()

    def target_rollout_ended(self, target_kind: str, outcome: str) -> None:
        self.target_rollouts.labels(
            target_kind=one_of(target_kind, TARGET_KINDS), outcome=one_of(outcome, TARGET_OUTCOMES)
        ).inc()

    def step(self, kind: str, target_kind: str, ok: bool, seconds: float) -> None:
        self.step_duration.labels(
            kind=one_of(kind, STEP_KINDS),
            target_kind=one_of(target_kind, TARGET_KINDS) if target_kind else "",
            outcome="ok" if ok else "error",
        ).observe(max(seconds, 0.0))

    def analysis_decided(self, outcome: str, seconds: float, verdicts: Mapping[str, str]) -> None:
        self.analysis_duration.labels(outcome=one_of(outcome, ANALYSIS_OUTCOMES)).observe(max(seconds, 0.0))
        for metric, verdict in verdicts.items():
            self.analysis_verdicts.labels(
                metric=self.analysis_metrics(metric), outcome=one_of(verdict, METRIC_VERDICTS)
            ).inc()

    def pushed(self, retries: int) -> None:
        if retries > 0:
            self.push_retries.inc(retries)

    def write_refused(self, reason: str) -> None:
        self.writes_refused.labels(reason=reason if reason in WRITE_REFUSALS else "error").inc()

    def fleet_sites(self, app: str, checked: int, failed: int) -> None:
        label = self.apps(app)
        self.sites_checked.labels(app=label).inc(checked)
        self.sites_failed.labels(app=label).inc(failed)

    def census(self, in_flight: Mapping[str, int]) -> None:
        for phase in IN_FLIGHT_PHASES:
            self.in_flight.labels(phase=phase).set(in_flight.get(phase, 0))
        self.approvals_waiting.set(in_flight.get("awaiting-approval", 0))


class TemporalRuntimeMetrics(Collector):
    """The Temporal SDK runtime's metrics, fetched from its Prometheus exporter (bound on loopback) at each
    collection and re-exposed, so the worker serves them and aicd's own on one port."""

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:  # our own loopback URL
                text = response.read().decode("utf-8")
        except OSError as error:
            log.warning("Temporal runtime metrics unavailable at %s: %s", self.url, error)
            return
        yield from text_string_to_metric_families(text)


def worker_registry(temporal_metrics_url: str | None) -> CollectorRegistry:
    """The worker process's registry: process and Python runtime metrics, the Temporal SDK's, and (added by
    AicdMetrics) aicd's own."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    if temporal_metrics_url:
        registry.register(TemporalRuntimeMetrics(temporal_metrics_url))
    return registry


def _version() -> str:
    try:
        return metadata.version("aic-delivery")
    except metadata.PackageNotFoundError:
        return "unknown"
