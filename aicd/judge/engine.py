"""The judge: per-metric verdicts and the evidence outcome at one look (a pure function of its inputs).

Verdicts, per metric:

* **fail** -- a regression beyond the tolerance is shown: the fail-side confidence bound lies beyond the
  tolerance band (over the whole analysis -- by the anytime-valid sequence or by the planned-look test --,
  or over its most recent half for a regression that grows, or a much noisier canary), or the canary's
  median over the latest interval breaks an absolute ``max``/``min``;
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
  split never depends on the data). Inside a metric, per kind (``SHARES``): the *planned-look test* -- the
  main comparison as a fixed-sample test at each look, its share spent over the looks of the plan as a
  group-sequential design (:mod:`aicd.judge.spending`), which is far tighter at the looks that come than
  an anytime-valid bound -- takes ``planned``; the recent-window test takes ``recent`` when the analysis is
  long enough for it (spread evenly over the intervals at which it may run); the spread test
  ``DISPERSION_ALPHA_SHARE`` when it applies; the main test, a confidence sequence valid at every look at
  once however many there are, the rest. A continuous metric judged per pod (``per_pod``) gives the
  per-pod test (:mod:`aicd.judge.pods`) ``PER_POD_SHARES.pods`` instead of the planned-look test's share,
  spent over the plan the same way; without pod series at a look that share goes unused. Both sides of a metric judged in both directions get half each.
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
from dataclasses import dataclass

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
from aicd.judge.spending import look_share, planned_level

DEFAULT_SPACING_SECONDS = 15.0  # only when no series has two points to measure the query step from
RECENT_FIRST_INTERVALS = 2 * RECENT_MIN_INTERVALS  # judged intervals before the recent window runs


@dataclass(frozen=True)
class Shares:
    """How a metric kind splits its error budget over its fail-side tests (the main anytime-valid test gets
    what the others leave). ``planned_power`` shapes the planned-look test's spending over the plan
    (:func:`aicd.judge.spending.look_share`); ``planned_from`` is the share of the plan it waits before it
    runs (its first looks would rest on a noise estimate from a few intervals, and the anytime-valid test
    is better there)."""

    planned: float
    recent: float
    planned_power: float = 1.0
    planned_from: float = 0.0
    pods: float = 0.0  # the per-pod test's share, spent over the plan with ``pods_power``
    pods_power: float = 0.0


# Counts: the conditional binomial model has no unknown noise level, so the planned-look likelihood-ratio
# test is close to the best test of the plan's horizon and takes most of the budget; the mixture sequence
# keeps a sliver for analyses that outrun their plan, and the recent-window test 0.1 (it sees the same
# events again; 0.2 -> 0.1 costs it log 2 of evidence). Measured on 300 runs per scenario of one error
# metric at alpha/3 (bench/judge.py's world): 0.7/0.2 -> 0.85/0.1 detects errors x1.5 79.5% -> 81%
# (by look 10: 37% -> 39%), errors x2 on low traffic 29% -> 33% (by look 10: 7.5% -> 12%), x2 with the
# same median (look 4); at the tolerance (x1.05, 3000 runs, normal and low traffic) 0.3% failed either
# way (budget 0.33%). Even spending (power 0): end-loading it (power 1) finds x1.5 more often (85%) but
# x2 a look later, and early detection is what the references are beaten on. Continuous metrics: the t-mixture detects large
# shifts early despite the unknown noise level and keeps most (every share it gives up delays a +25%
# shift: 0.5 instead of 0.6 moved its median detection from interval 6 to 7); the planned-look t-test,
# spending towards the end (power 2), adds power for shifts that need the whole analysis, and the
# recent-window test needs only 0.1 to catch the ramp as often as with 0.2 (the planned-look test sees its
# end too). Measured with bench/judge.py's runs, same seeds: latency +10% 25% -> 29% detected, +25%,
# variance x3 and the ramp unchanged, the latency canary at the tolerance 0.5% -> 0.6% of 1000 runs
# failed (its budget: 0.67%).
SHARES = {
    Kind.COUNT: Shares(planned=0.85, recent=0.1, planned_power=0.0),
    Kind.CONTINUOUS: Shares(planned=0.3, recent=0.1, planned_power=2.0, planned_from=0.3),
}
# A continuous metric judged per pod: the per-pod test reads the noise level from the baseline's pods
# rather than from the canary's few correlated intervals, so it takes what the planned-look test had and
# more (the planned-look test only repeats the comparison the per-pod test does better); the t-mixture
# keeps the rest for large shifts and for looks where the pods' series are missing.
PER_POD_SHARES = Shares(planned=0.0, recent=0.1, pods=0.65, pods_power=1.0)
PLANNED_TAIL = 0.1  # of the planned-look test's budget, for looks after the plan (a paused analysis)


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
    per_metric_alpha = config.alpha / len(config.metrics)
    per_metric = -math.log(per_metric_alpha)
    shares = PER_POD_SHARES if metric.per_pod else SHARES[metric.kind]
    main_share = 1.0 - shares.planned - shares.pods
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
    last = None if config.planned_intervals is None else planned + 1  # one spare for a rounded grid
    recent = None
    if planned >= RECENT_FIRST_INTERVALS:
        main_share -= shares.recent
        share = look_share(judged_now, RECENT_FIRST_INTERVALS, last, 0.0, 0.0)
        if share > 0:
            recent = per_metric - math.log(shares.recent * share)
    first = max(1, math.ceil(shares.planned_from * planned))
    level = planned_level(
        judged_now, first, last, shares.planned_power, PLANNED_TAIL, shares.planned * per_metric_alpha
    )
    pods_level = planned_level(
        judged_now, 1, last, shares.pods_power, PLANNED_TAIL, shares.pods * per_metric_alpha
    )
    return Budget(
        main=per_metric - math.log(main_share),
        safe=math.log(1.0 / config.alpha),
        recent=recent,
        dispersion=dispersion,
        planned=-math.log(level) if level > 0 else None,
        pods=-math.log(pods_level) if pods_level > 0 else None,
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
        or evidence.recent_no_data_share > config.no_data_limit
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
