"""The analysis activity: fetch canary and baseline samples from Prometheus (range queries over the whole
analysis so far) and hand them to the judge, a pure function. Provider errors and empty results are data
for the judge, never a crash and never a pass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_api_client import PrometheusConnect
from temporalio import activity
from urllib3.util.retry import Retry

from aicd import judge as judging
from aicd.activities.heartbeats import in_thread_with_heartbeats
from aicd.plan import AnalysisPlan, MetricPlan
from aicd.spec.placeholders import render

CANARY_TRACK = "canary"
BASELINE_TRACK = "stable"
QUERY_TIMEOUT_S = 10


@dataclass
class AnalysisLookRequest:
    analysis: AnalysisPlan
    start: float  # epoch seconds: when the analysis step began
    end: float  # epoch seconds: this look
    canary_weight: int
    final: bool
    metrics: list[str] = field(default_factory=list)  # empty: every metric of the analysis
    variables: dict[str, str] = field(default_factory=dict)  # stage, target: usable in queries


def _step_seconds(plan: AnalysisPlan) -> float:
    """Resolution of the range queries: several points per interval so the judge can block them."""
    return max(1.0, min(plan.interval_s / 5.0, 15.0))


def _query_range(prometheus: PrometheusConnect, query: str, start: float, end: float, step: float) -> judging.Series:
    """One series for a query: several result series are summed per timestamp (counts) -- a query that
    should compare one value per track is expected to aggregate itself, as `sum(rate(...))` does."""
    result = prometheus.custom_query_range(
        query,
        start_time=datetime.fromtimestamp(start, UTC),
        end_time=datetime.fromtimestamp(max(end, start + step), UTC),
        step=f"{step:g}s",
        params={"timeout": f"{QUERY_TIMEOUT_S}s"},
    )
    totals: dict[float, float] = {}
    for series in result:
        for timestamp, value in series.get("values", []):
            number = float(value)
            if math.isnan(number):
                continue
            totals[float(timestamp)] = totals.get(float(timestamp), 0.0) + number
    stamps = sorted(totals)
    return judging.Series(tuple(stamps), tuple(totals[stamp] for stamp in stamps))


def fetch_samples(
    plan: AnalysisPlan, metric: MetricPlan, start: float, end: float, variables: dict[str, str] | None = None
) -> judging.MetricSamples:
    # No client-side retries: a look that cannot reach Prometheus is a no-data look, and the next look retries.
    prometheus = PrometheusConnect(url=plan.prometheus_url, disable_ssl=True, retry=Retry(total=0), timeout=QUERY_TIMEOUT_S)
    step = _step_seconds(plan)

    def track_query(template: str, track: str) -> judging.Series:
        return _query_range(prometheus, render(template, {**(variables or {}), "track": track}), start, end, step)

    try:
        canary = track_query(metric.query, CANARY_TRACK)
        baseline = track_query(metric.query, BASELINE_TRACK)
        canary_total = baseline_total = None
        if metric.total:
            canary_total = track_query(metric.total, CANARY_TRACK)
            baseline_total = track_query(metric.total, BASELINE_TRACK)
        return judging.MetricSamples(canary, baseline, canary_total, baseline_total)
    except Exception as error:  # any provider trouble is a no-data look for the judge
        empty = judging.Series((), ())
        return judging.MetricSamples(empty, empty, error=f"{type(error).__name__}: {error}"[:300])


def analyze(
    plan: AnalysisPlan,
    start: float,
    end: float,
    *,
    final: bool,
    canary_weight: float | None,
    metrics: list[str] | None = None,
    variables: dict[str, str] | None = None,
) -> judging.AnalysisVerdict:
    """Fetch every chosen metric's samples over [start, end] and judge them (the analysis step's look,
    and `aicd analyze`)."""
    chosen = [metric for metric in plan.metrics if not metrics or metric.config.name in metrics]
    samples = {metric.config.name: fetch_samples(plan, metric, start, end, variables) for metric in chosen}
    return judging.judge(
        [metric.config for metric in chosen],
        samples,
        judging.JudgeConfig(alpha=plan.alpha, no_data_limit=plan.no_data_limit),
        final=final,
        canary_weight=canary_weight,
        interval_seconds=plan.interval_s,
    )


def look(request: AnalysisLookRequest) -> dict[str, Any]:
    verdict = analyze(
        request.analysis,
        request.start,
        request.end,
        final=request.final,
        canary_weight=float(request.canary_weight),
        metrics=request.metrics,
        variables=request.variables,
    )
    return verdict.to_dict()


@activity.defn(name="analysis_look")
async def analysis_look(request: AnalysisLookRequest) -> dict[str, Any]:
    return await in_thread_with_heartbeats(lambda look_request, _heartbeat: look(look_request), request)
