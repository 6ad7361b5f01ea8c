"""What the per-kind analyses hand back to the verdict logic (internal to the judge)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aicd.judge.model import Statistic, TestName, TestResult
from aicd.judge.sequential import Band, SequenceResult


@dataclass(frozen=True)
class MetricEvidence:
    """Data counts and test results of one metric at one look. ``tests[0]`` is the main test: its safe
    bounds decide a pass."""

    tests: tuple[TestResult, ...]
    canary_samples: int  # usable points per side
    baseline_samples: int
    intervals: int  # intervals with data on both sides (the test's observations)
    no_data_share: float  # share of intervals without data on either side
    testable: bool  # enough paired data for the test to say anything
    shown_safe: bool  # the pass-side bounds lie inside the tolerance band
    regression: bool  # a regression beyond the band is shown (by the main or the recent-window test)
    canary_value: float | None = None  # a readable level per side (median, error ratio, rate)
    baseline_value: float | None = None
    detail: str = ""  # extra facts for the details view ("12 vs 104 events", "exposure from weight")
    settle_factor: float | None = None  # how many times the data so far would settle an inconclusive metric
    unit: str = "interval"  # what more data means here: "interval" (time) or "event"
    events_note: str = ""  # readable event counts of a count metric ("0 errors in 60 requests")
    # The same share over the recent window alone: a canary that stopped reporting in the last minutes
    # (crashed pods, a scrape target gone) is not shown safe by what it did before.
    recent_no_data_share: float = 0.0
    # Why no amount of such data would show the canary within tolerance ("" when it could): the metric is
    # then inconclusive at best, never a pass, though a regression may still be shown.
    unjudgeable: str = ""


LOG_RATIO_CAP = math.log(1e9)
RECENT_MIN_INTERVALS = 4  # the recent window is the latest half of the judged intervals, at least this many


@dataclass(frozen=True)
class Budget:
    """One metric's log thresholds at this look (see :mod:`aicd.judge.engine` for the split).

    ``main``: the fail side of the main test (before a two-sided band splits it); ``safe``: the pass-side
    bounds; ``planned``: the planned-look test (the main comparison as a fixed-sample test at this look),
    ``None`` when it does not run; ``recent``: the recent-window test, ``None`` when it does not run at this
    look; ``dispersion``: the spread test, ``None`` when it does not apply; ``pods``: the per-pod test at
    this look (:mod:`aicd.judge.pods`), ``None`` when the metric is not judged per pod."""

    main: float
    safe: float
    recent: float | None = None
    dispersion: float | None = None
    planned: float | None = None
    pods: float | None = None


def recent_window(count: int, warmup_intervals: int) -> int:
    """Index of the first interval of the recent window: the latest half of the judged intervals."""
    judged = max(0, count - warmup_intervals)
    return count - math.ceil(judged / 2)


def no_data_shares(paired: np.ndarray, warmup_intervals: int) -> tuple[float, float]:
    """The share of judged intervals without data on both sides (`paired`: one flag per interval), over all
    of them and over the recent window."""
    count = len(paired)
    shares = []
    for first in (warmup_intervals, recent_window(count, warmup_intervals)):
        window = paired[first:]
        shares.append(1.0 - int(window.sum()) / len(window) if len(window) else 1.0)
    return shares[0], shares[1]


def to_test_result(
    name: TestName,
    sequence: SequenceResult,
    band: Band,
    log_scale: bool = True,
    statistic: Statistic = Statistic.E_VALUE,
) -> TestResult:
    """Map a log-scale (or relative-difference) sequence onto canary/baseline ratios."""

    def ratio(value: float | None) -> float | None:
        if value is None or not math.isfinite(value):
            return None
        # Bounds from very few observations can be astronomically wide; beyond 1e9x they say nothing more.
        return math.exp(max(-LOG_RATIO_CAP, min(LOG_RATIO_CAP, value))) if log_scale else 1.0 + value

    safe_known = math.isfinite(sequence.safe_log_threshold)
    return TestResult(
        name=name,
        estimate=ratio(sequence.estimate),
        ci_low=ratio(sequence.ci_low),
        ci_high=ratio(sequence.ci_high),
        confidence=1.0 - math.exp(-sequence.log_threshold),
        allowed_low=ratio(band.low),
        allowed_high=ratio(band.high),
        statistic=statistic,
        log_evidence=finite(sequence.log_evidence),
        log_threshold=sequence.log_threshold,
        rejected=sequence.rejected,
        observations=sequence.observations,
        safe_low=ratio(sequence.safe_low) if safe_known else None,
        safe_high=ratio(sequence.safe_high) if safe_known else None,
        safe_confidence=1.0 - math.exp(-sequence.safe_log_threshold) if safe_known else None,
        within=sequence.within,
    )


def finite(value: float) -> float:
    """Clamp so verdicts stay plain JSON (no inf/nan)."""
    if math.isnan(value):
        return 0.0
    return max(-1e6, min(1e6, value))
