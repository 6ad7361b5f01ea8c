"""The analysis activity: fetch canary and baseline samples from the metrics provider (range queries over
the whole analysis so far) and hand them to the judge, a pure function. Provider errors and empty results
are data for the judge, never a crash and never a pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from temporalio import activity

from aicd.activities.heartbeats import in_thread_with_heartbeats
from aicd.activities.prometheus import MetricsProvider, PrometheusProvider
from aicd.judge import AnalysisVerdict, Kind, MetricSamples, Series, judge
from aicd.plan import AnalysisPlan, MetricPlan
from aicd.redact import redact
from aicd.spec.placeholders import render

CANARY_TRACK = "canary"
BASELINE_TRACK = "stable"


@dataclass
class AnalysisLookRequest:
    analysis: AnalysisPlan
    start: float  # epoch seconds: when the analysis step began
    end: float  # epoch seconds: this look
    canary_weight: int
    final: bool  # at or past the step's duration: the decision after this look may end the step
    metrics: list[str] = field(default_factory=list)  # empty: every metric of the analysis
    variables: dict[str, str] = field(default_factory=dict)  # stage, target: usable in queries
    planned_intervals: int | None = None  # how many intervals the step may last (the judge's budget plan)


def step_seconds(plan: AnalysisPlan) -> float:
    """Resolution of the range queries: several points per interval so the judge can block them."""
    return max(1.0, min(plan.interval_s / 5.0, 15.0))


def fetch_samples(
    provider: MetricsProvider,
    metric: MetricPlan,
    start: float,
    end: float,
    step: float,
    variables: dict[str, str] | None = None,
) -> MetricSamples:
    def track_query(template: str, track: str, one_series: bool = False) -> Series:
        text = render(template, {**(variables or {}), "track": track})
        return provider.query_range(text, start, end, step, one_series=one_series)

    level = metric.config.kind != Kind.COUNT  # a level is compared as one value per track; counts add up
    try:
        canary = track_query(metric.query, CANARY_TRACK, level)
        baseline = track_query(metric.query, BASELINE_TRACK, level)
        canary_total = baseline_total = None
        if metric.total:
            canary_total = track_query(metric.total, CANARY_TRACK)
            baseline_total = track_query(metric.total, BASELINE_TRACK)
        baseline_pods: tuple[Series, ...] = ()
        if metric.pod_query and metric.pod_label:
            # The baseline once more, one series per pod: the judge compares the canary with each of them.
            per_pod = provider.query_range_by(
                render(metric.pod_query, {**(variables or {}), "track": BASELINE_TRACK}),
                metric.pod_label,
                start,
                end,
                step,
            )
            baseline_pods = tuple(per_pod.values())
        return MetricSamples(canary, baseline, canary_total, baseline_total, baseline_pods=baseline_pods)
    except Exception as error:  # any provider trouble is a no-data look for the judge
        return failed_samples(error)


def failed_samples(error: Exception) -> MetricSamples:
    # The error goes into the look's result, which no failure redaction sees: an HTTP library's error may
    # quote a header or a URL with its credentials.
    return MetricSamples(Series(), Series(), error=redact(describe_error(error)))


def describe_error(error: BaseException) -> str:
    """The error and its innermost reason ("SSLError: [SSL: CERTIFICATE_VERIFY_FAILED] ..."), without the
    long request URL that the HTTP libraries wrap around it."""
    reason: object = error
    for _ in range(10):
        inner = getattr(reason, "reason", None)
        if (
            inner is None
            and isinstance(reason, BaseException)
            and reason.args
            and isinstance(reason.args[0], BaseException)
        ):
            inner = reason.args[0]
        if inner is None or inner is reason:
            break
        reason = inner
    return f"{type(error).__name__}: {reason}"[:300]


def analyze(
    plan: AnalysisPlan,
    start: float,
    end: float,
    *,
    canary_weight: float | None,
    metrics: list[str] | None = None,
    variables: dict[str, str] | None = None,
    planned_intervals: int | None = None,
    provider_for: Callable[[AnalysisPlan], MetricsProvider] | None = None,
) -> AnalysisVerdict:
    """Fetch every chosen metric's samples over [start, end] and judge them (the analysis step's look,
    and `aicd analyze`)."""
    config = plan.judge_config(metrics, planned_intervals)
    chosen = [metric for metric in plan.metrics if metric.config in config.metrics]
    try:
        provider = (provider_for or _prometheus)(plan)
    except Exception as error:  # a missing secret or CA file: every metric errs, the judge says so
        samples = {metric.config.name: failed_samples(error) for metric in chosen}
        return judge(samples, config, canary_weight=canary_weight)
    step = step_seconds(plan)
    try:
        samples = {
            metric.config.name: fetch_samples(provider, metric, start, end, step, variables)
            for metric in chosen
        }
    finally:
        close = getattr(provider, "close", None)
        if close is not None:
            close()
    return judge(samples, config, canary_weight=canary_weight)


def _prometheus(plan: AnalysisPlan) -> MetricsProvider:
    return PrometheusProvider(plan.connection)


def look(request: AnalysisLookRequest) -> AnalysisVerdict:
    return analyze(
        request.analysis,
        request.start,
        request.end,
        canary_weight=float(request.canary_weight),
        metrics=request.metrics,
        variables=request.variables,
        planned_intervals=request.planned_intervals,
    )


@activity.defn(name="analysis_look")
async def analysis_look(request: AnalysisLookRequest) -> AnalysisVerdict:
    return await in_thread_with_heartbeats(lambda look_request, _heartbeat: look(look_request), request)
