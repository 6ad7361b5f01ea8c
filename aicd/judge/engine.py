"""The judge: per-metric verdicts and the evidence outcome at one look (a pure function of its inputs).

Verdicts, per metric:

* **fail** -- a regression beyond the tolerance is shown: the fail-side confidence bound lies beyond the
  tolerance band (over the whole analysis, or over its most recent half for a regression that grows, or a
  much noisier canary), or the canary's median over the latest interval breaks an absolute ``max``/``min``;
* **pass** -- the canary is shown within tolerance: the pass-side bound lies inside the band (for a metric
  whose bad direction is ``increase``, the upper bound of the canary/baseline ratio is below 1 +
  tolerance), with at least ``min_samples`` points per side and no more than ``no_data_limit`` of the
  intervals without data;
* **inconclusive** -- neither yet; **nodata** -- too little data to judge; **error** -- the query failed.

The evidence outcome is ``fail`` if a metric failed, ``pass`` if every metric passed, else
``inconclusive``; what to do with it across looks is :mod:`aicd.judge.decision`'s job.

Error budget. ``alpha`` bounds two risks:

* *false alarm*: a canary within tolerance on every metric fails at any look. alpha is split evenly over
  the m configured metrics (metric i's tests together get alpha/m; metrics without data still count, so the
  split never depends on the data). Inside a metric, the recent-window test takes ``RECENT_ALPHA_SHARE`` when
  the analysis is long enough for it (spread evenly over the intervals at which it may run, so its
  fixed-sample test keeps its level over all of them), the spread test ``DISPERSION_ALPHA_SHARE`` when it
  applies, the main test the rest; both sides of a metric judged in both directions get half each. The
  main test is a confidence sequence, valid at every look at once, however many looks there are.
* *unsafe pass*: a canary beyond tolerance on some metric passes. A pass needs *every* metric shown
  within tolerance, so it is enough that the metric beyond tolerance is shown inside the band with
  probability <= alpha (an intersection-union argument): each metric's pass-side bound holds at level alpha,
  without dividing by m.

All budget splits are decided from the configuration (and the number of intervals, never their values).
Deterministic: the verdict is recomputed from all samples at each look.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from aicd.judge.blocks import BlockGrid, Points, PreparedSamples, make_grid, recent_median, typical_spacing
from aicd.judge.continuous import DISPERSION_ALPHA_SHARE, analyse_continuous, dispersion_test_applies
from aicd.judge.count import analyse_count
from aicd.judge.evidence import RECENT_MIN_INTERVALS, Budget, MetricEvidence
from aicd.judge.explain import explain_metric, settle_text, summarise
from aicd.judge.model import (
    AnalysisVerdict,
    JudgeConfig,
    Kind,
    MetricConfig,
    MetricOutcome,
    MetricSamples,
    MetricVerdict,
    Outcome,
    ThresholdCheck,
)

DEFAULT_SPACING_SECONDS = 15.0  # only when no series has two points to measure the query step from
RECENT_ALPHA_SHARE = 0.2
RECENT_FIRST_INTERVALS = 2 * RECENT_MIN_INTERVALS  # judged intervals before the recent window runs


def judge(
    samples: Mapping[str, MetricSamples], config: JudgeConfig, *, canary_weight: float | None = None
) -> AnalysisVerdict:
    """Judge one look of a canary analysis.

    ``samples`` holds, per metric name, everything since the analysis started (a metric missing there is
    ``nodata``). ``canary_weight`` (0..100) is the canary's traffic share, used as exposure for count
    metrics without total series and for the spread test.
    """
    metrics = config.metrics
    if not metrics:
        return AnalysisVerdict(Outcome.INCONCLUSIVE, (), "no metrics to judge")
    prepared = {
        metric.name: PreparedSamples.of(samples[metric.name]) for metric in metrics if metric.name in samples
    }
    all_points = [points for entry in prepared.values() for points in entry.all_points()]
    populated = [points.times for points in all_points if points.size]
    spacing = typical_spacing(all_points) or DEFAULT_SPACING_SECONDS
    if populated:
        origin = min(float(times[0]) for times in populated)
        end = max(float(times[-1]) for times in populated)
    else:
        origin = end = 0.0
    grid = make_grid(origin, end, spacing, config.interval_s)
    verdicts = tuple(
        _judge_metric(
            metric,
            samples.get(metric.name),
            prepared.get(metric.name),
            config,
            grid,
            spacing,
            canary_weight,
            bool(populated),
        )
        for metric in metrics
    )
    outcome = _outcome(verdicts)
    return AnalysisVerdict(outcome=outcome, metrics=verdicts, summary=summarise(outcome, verdicts))


def budget_for(
    metric: MetricConfig, config: JudgeConfig, intervals: int, canary_weight: float | None
) -> Budget:
    """The log thresholds of one metric's tests at a look whose grid has ``intervals`` intervals."""
    per_metric = math.log(len(config.metrics) / config.alpha)
    main_share = 1.0
    dispersion = None
    if dispersion_test_applies(metric, canary_weight):
        main_share -= DISPERSION_ALPHA_SHARE
        dispersion = per_metric - math.log(DISPERSION_ALPHA_SHARE)
    judged_now = intervals - config.warmup_intervals
    # A planned analysis sets the shares aside from its plan, whatever the data; a single look (no plan)
    # runs each test once, with the intervals it has.
    planned = (
        judged_now if config.planned_intervals is None else config.planned_intervals - config.warmup_intervals
    )
    last = planned if config.planned_intervals is None else planned + 1  # one spare for a rounded grid
    recent = None
    if planned >= RECENT_FIRST_INTERVALS:
        main_share -= RECENT_ALPHA_SHARE
        if RECENT_FIRST_INTERVALS <= judged_now <= last:
            looks = last - RECENT_FIRST_INTERVALS + 1
            recent = per_metric - math.log(RECENT_ALPHA_SHARE) + math.log(looks)
    return Budget(
        main=per_metric - math.log(main_share),
        safe=math.log(1.0 / config.alpha),
        recent=recent,
        dispersion=dispersion,
    )


def _judge_metric(
    metric: MetricConfig,
    samples: MetricSamples | None,
    prepared: PreparedSamples | None,
    config: JudgeConfig,
    grid: BlockGrid,
    spacing: float,
    canary_weight: float | None,
    any_data: bool,
) -> MetricVerdict:
    if samples is None or prepared is None:
        explanation = explain_metric(metric, MetricOutcome.NODATA, None, (), None, config)
        return MetricVerdict(
            metric.name, metric.kind, metric.direction, metric.critical, MetricOutcome.NODATA, explanation
        )
    budget = budget_for(metric, config, grid.count, canary_weight)
    warmup = config.warmup_intervals
    metric_spacing = typical_spacing(prepared.all_points()) or spacing
    if metric.kind == Kind.COUNT:
        evidence = analyse_count(metric, prepared, grid, metric_spacing, budget, canary_weight, warmup)
    else:
        evidence = analyse_continuous(metric, prepared, grid, metric_spacing, budget, canary_weight, warmup)
    thresholds = _threshold_checks(metric, prepared.canary, grid, config.min_samples) if any_data else ()

    verdict = _metric_verdict(evidence, thresholds, samples.error, config)
    main = evidence.tests[0]
    return MetricVerdict(
        name=metric.name,
        kind=metric.kind,
        direction=metric.direction,
        critical=metric.critical,
        verdict=verdict,
        explanation=explain_metric(metric, verdict, evidence, thresholds, samples.error, config, grid.length),
        estimate=main.estimate,
        ci_low=main.ci_low,
        ci_high=main.ci_high,
        safe_low=main.safe_low,
        safe_high=main.safe_high,
        canary_samples=evidence.canary_samples,
        baseline_samples=evidence.baseline_samples,
        intervals=evidence.intervals,
        no_data_share=round(evidence.no_data_share, 6),
        canary_value=_finite_or_none(evidence.canary_value),
        baseline_value=_finite_or_none(evidence.baseline_value),
        tests=evidence.tests,
        thresholds=thresholds,
        error=samples.error,
        regression=evidence.regression,
        detail=evidence.detail,
        settle=settle_text(metric, verdict, evidence, grid.length)
        if verdict == MetricOutcome.INCONCLUSIVE
        else "",
    )


def _metric_verdict(
    evidence: MetricEvidence, thresholds: tuple[ThresholdCheck, ...], error: str | None, config: JudgeConfig
) -> MetricOutcome:
    # A shown regression or a broken limit stands on the data already seen, whatever this look's query did.
    if evidence.regression or any(check.violated for check in thresholds):
        return MetricOutcome.FAIL
    if error:
        return MetricOutcome.ERROR
    if (
        evidence.canary_samples == 0
        or evidence.baseline_samples == 0
        or evidence.no_data_share > config.no_data_limit
    ):
        return MetricOutcome.NODATA
    if (
        evidence.canary_samples < config.min_samples
        or evidence.baseline_samples < config.min_samples
        or not evidence.testable
        or not evidence.shown_safe
    ):
        return MetricOutcome.INCONCLUSIVE
    return MetricOutcome.PASS


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


def _outcome(verdicts: tuple[MetricVerdict, ...]) -> Outcome:
    if any(verdict.verdict == MetricOutcome.FAIL for verdict in verdicts):
        return Outcome.FAIL
    if all(verdict.verdict == MetricOutcome.PASS for verdict in verdicts):
        return Outcome.PASS
    return Outcome.INCONCLUSIVE


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and bool(np.isfinite(value)) else None
