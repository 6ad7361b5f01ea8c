"""The judge: per-metric verdicts and the analysis outcome at one look.

Error budget: ``alpha`` is split evenly over the m configured metrics (Bonferroni on e-values: metric i
rejects when its e-process reaches m/alpha; a metric judged in both directions gives each side half, and
when the spread test runs it takes a fixed share of its metric's part). Metrics without data still count
in m, so the split never depends on the data. Each test is anytime-valid, so the probability that an unchanged canary fails at
*any* look of the analysis, on *any* metric, is at most alpha, however many looks there are -- which is
why a statistical rejection may end the analysis at an interim look.

Outcome rules:

* a metric FAILs when one of its tests rejects (its confidence sequence lies outside the tolerance band)
  or when its canary median over the latest interval breaks an absolute ``max``/``min``;
* a rejection fails the analysis at once; a broken limit does so at once for a ``critical`` metric and
  otherwise only if it still holds at the final look (limits are point-in-time readings);
* the final look PASSes only when every metric passed: no failure, at least ``min_samples`` points per
  side, a testable number of intervals and no more than ``no_data_limit`` intervals without data. A metric
  that is nodata, errored or short of data makes the final outcome INCONCLUSIVE -- never a pass.

Deterministic: the verdict is a pure function of its arguments, recomputed from all samples at each look.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from aicd.judge.blocks import BlockGrid, Points, PreparedSamples, make_grid, recent_median, typical_spacing
from aicd.judge.continuous import DISPERSION_ALPHA_SHARE, analyse_continuous, dispersion_test_applies
from aicd.judge.count import analyse_count
from aicd.judge.evidence import MetricEvidence
from aicd.judge.explain import describe_test, explain_metric
from aicd.judge.model import (
    ERROR,
    FAIL,
    INCONCLUSIVE,
    KIND_COUNT,
    NODATA,
    PASS,
    RUNNING,
    AnalysisVerdict,
    JudgeConfig,
    MetricConfig,
    MetricSamples,
    MetricVerdict,
    ThresholdCheck,
)

DEFAULT_SPACING_SECONDS = 15.0  # only when no series has two points to measure the query step from


def judge(
    metrics: Sequence[MetricConfig],
    samples: Mapping[str, MetricSamples],
    config: JudgeConfig,
    *,
    final: bool,
    canary_weight: float | None = None,
    interval_seconds: float | None = None,
    warmup_intervals: int = 0,
) -> AnalysisVerdict:
    """Judge one look of a canary analysis.

    ``samples`` holds, per metric name, everything since the analysis started. ``canary_weight`` (0..100)
    is the canary's traffic share, used as exposure for count metrics without total series and for the
    spread test. ``interval_seconds`` is the length of the intervals the series are cut into (default:
    inferred as five query steps, at least 30 s; it should be at least the PromQL range window).
    ``warmup_intervals`` leading intervals are left out of the tests (cold caches, JIT).
    """
    names = [metric.name for metric in metrics]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"metric names must be unique, repeated: {', '.join(duplicates)}")
    if not metrics:
        outcome = INCONCLUSIVE if final else RUNNING
        return AnalysisVerdict(outcome, (), "no metrics to judge")

    prepared = {name: PreparedSamples.of(samples[name]) for name in names if name in samples}
    all_points = [points for entry in prepared.values() for points in entry.all_points()]
    populated = [points.times for points in all_points if points.size]
    spacing = typical_spacing(all_points) or DEFAULT_SPACING_SECONDS
    if populated:
        origin = min(float(times[0]) for times in populated)
        end = max(float(times[-1]) for times in populated)
    else:
        origin = end = 0.0
    grid = make_grid(origin, end, spacing, interval_seconds)

    metric_count = len(metrics)
    verdicts = tuple(
        _judge_metric(
            metric,
            samples.get(metric.name),
            prepared.get(metric.name),
            config,
            grid,
            spacing,
            metric_count,
            canary_weight,
            max(0, warmup_intervals),
            bool(populated),
        )
        for metric in metrics
    )
    outcome, summary = _outcome(verdicts, config, final)
    return AnalysisVerdict(outcome=outcome, metrics=verdicts, summary=summary)


def _judge_metric(
    metric: MetricConfig,
    samples: MetricSamples | None,
    prepared: PreparedSamples | None,
    config: JudgeConfig,
    grid: BlockGrid,
    spacing: float,
    metric_count: int,
    canary_weight: float | None,
    warmup_intervals: int,
    any_data: bool,
) -> MetricVerdict:
    if samples is None or prepared is None:
        explanation = explain_metric(metric, NODATA, None, (), None, config.min_samples, config.no_data_limit)
        return MetricVerdict(metric.name, metric.kind, metric.direction, metric.critical, NODATA, explanation)

    log_budget = math.log(metric_count / config.alpha)  # log(1/alpha_i)
    if metric.kind == KIND_COUNT:
        metric_spacing = typical_spacing(prepared.all_points()) or spacing
        evidence = analyse_count(
            metric, prepared, grid, metric_spacing, log_budget, canary_weight, warmup_intervals
        )
    else:
        dispersion_threshold = None
        location_threshold = log_budget
        if dispersion_test_applies(metric, canary_weight):
            location_threshold = log_budget - math.log1p(-DISPERSION_ALPHA_SHARE)
            dispersion_threshold = log_budget - math.log(DISPERSION_ALPHA_SHARE)
        evidence = analyse_continuous(
            metric, prepared, grid, location_threshold, dispersion_threshold, canary_weight, warmup_intervals
        )
    thresholds = _threshold_checks(metric, prepared.canary, grid, config.min_samples) if any_data else ()

    verdict = _metric_verdict(evidence, thresholds, samples.error, config)
    main = evidence.tests[0]
    explanation = explain_metric(
        metric, verdict, evidence, thresholds, samples.error, config.min_samples, config.no_data_limit
    )
    return MetricVerdict(
        name=metric.name,
        kind=metric.kind,
        direction=metric.direction,
        critical=metric.critical,
        verdict=verdict,
        explanation=explanation,
        estimate=main.estimate,
        ci_low=main.ci_low,
        ci_high=main.ci_high,
        confidence=main.confidence,
        log_e_value=main.log_e_value,
        log_threshold=main.log_threshold,
        canary_samples=evidence.canary_samples,
        baseline_samples=evidence.baseline_samples,
        intervals=evidence.intervals,
        no_data_share=round(evidence.no_data_share, 6),
        canary_value=_finite_or_none(evidence.canary_value),
        baseline_value=_finite_or_none(evidence.baseline_value),
        tests=evidence.tests,
        thresholds=thresholds,
        error=samples.error,
    )


def _metric_verdict(
    evidence: MetricEvidence, thresholds: tuple[ThresholdCheck, ...], error: str | None, config: JudgeConfig
) -> str:
    # A rejection or a broken limit stands on the data already seen, whatever this look's query did.
    if any(test.rejected for test in evidence.tests) or any(check.violated for check in thresholds):
        return FAIL
    if error:
        return ERROR
    if (
        evidence.canary_samples == 0
        or evidence.baseline_samples == 0
        or evidence.no_data_share > config.no_data_limit
    ):
        return NODATA
    if (
        evidence.canary_samples < config.min_samples
        or evidence.baseline_samples < config.min_samples
        or not evidence.testable
    ):
        return INCONCLUSIVE
    return PASS


def _threshold_checks(
    metric: MetricConfig, canary: Points, grid: BlockGrid, min_samples: int
) -> tuple[ThresholdCheck, ...]:
    if metric.max is None and metric.min is None:
        return ()
    observed = recent_median(canary.times, canary.values, grid, min_samples)
    checks = []
    if metric.max is not None:
        checks.append(
            ThresholdCheck("max", float(metric.max), observed, observed is not None and observed > metric.max)
        )
    if metric.min is not None:
        checks.append(
            ThresholdCheck("min", float(metric.min), observed, observed is not None and observed < metric.min)
        )
    return tuple(checks)


def _outcome(verdicts: tuple[MetricVerdict, ...], config: JudgeConfig, final: bool) -> tuple[str, str]:
    rejected = [verdict for verdict in verdicts if verdict.statistically_rejected]
    limit_broken = [verdict for verdict in verdicts if verdict.threshold_violated]
    immediate = rejected + [
        verdict for verdict in limit_broken if verdict.critical and verdict not in rejected
    ]
    failing = immediate if not final else rejected + [v for v in limit_broken if v not in rejected]
    if failing:
        return FAIL, "fail: " + "; ".join(_failure_reason(verdict) for verdict in failing)
    if not final:
        ready = sum(1 for verdict in verdicts if verdict.verdict == PASS)
        pending = f"; limits broken on {', '.join(v.name for v in limit_broken)}" if limit_broken else ""
        return RUNNING, (
            f"running: no regression detected so far ({ready} of {len(verdicts)} metrics have enough data, "
            f"family-wise alpha {config.alpha:g}){pending}"
        )
    not_passed = [verdict for verdict in verdicts if verdict.verdict != PASS]
    if not_passed:
        listed = ", ".join(f"{verdict.name} {verdict.verdict}" for verdict in not_passed)
        return (
            INCONCLUSIVE,
            f"inconclusive: no regression found, but not every metric had the evidence to pass ({listed})",
        )
    return PASS, f"pass: all {len(verdicts)} metrics within tolerance (family-wise alpha {config.alpha:g})"


def _failure_reason(verdict: MetricVerdict) -> str:
    reasons = [describe_test(test) for test in verdict.tests if test.rejected]
    reasons += [
        f"{check.bound} {check.limit:g} broken (recent median {check.observed:.4g})"
        for check in verdict.thresholds
        if check.violated and check.observed is not None
    ]
    return f"{verdict.name}{' (critical)' if verdict.critical else ''}: " + "; ".join(reasons)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and bool(np.isfinite(value)) else None
