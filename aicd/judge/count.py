"""``count`` metrics (errors, timeouts, restarts): canary vs baseline event *rates* per unit of exposure.

Prometheus hands back ``rate()`` values (events per second) at every query step; multiplying by the step
turns them into event counts (with overlapping range windows every event is spread over several steps, but
the sum over an interval still counts it about once). Exposure is the traffic each track served: from the
``total`` series when given (so error *ratios* are compared even at 10% canary traffic), otherwise the
canary weight (or, lacking both, equal traffic).

The test is the conditional-binomial rate-ratio confidence sequence of :mod:`aicd.judge.sequential` on the
per-interval counts: it works with zero counts (a baseline without errors gives no division by zero; a
canary that produces errors where the baseline has none fails once the count makes chance implausible),
and the per-interval exposure share absorbs load changes and unequal traffic. A Pearson quasi-likelihood
factor widens it when errors come in bursts.

When the total series shows traffic but the error series has no point at that time, the error count is
taken as zero: Prometheus returns nothing for an error counter that has never been incremented, and
reading that as "no data" would let a canary pass just because the baseline never erred (kayenta#426).
"""

from __future__ import annotations

import numpy as np

from aicd.judge.blocks import BlockGrid, FloatArray, Points, PreparedSamples
from aicd.judge.evidence import RATE_RATIO_TEST, MetricEvidence, to_test_result
from aicd.judge.model import MetricConfig
from aicd.judge.sequential import rate_ratio_sequence, tolerance_band

EQUAL_TRAFFIC_SHARE = 0.5


def analyse_count(
    metric: MetricConfig,
    samples: PreparedSamples,
    grid: BlockGrid,
    spacing: float,
    log_threshold: float,
    canary_weight: float | None,
    warmup_intervals: int,
) -> MetricEvidence:
    has_totals = _has_data(samples.canary_total) and _has_data(samples.baseline_total)
    if has_totals:
        canary_share = baseline_share = 1.0  # exposure comes straight from the totals
        note = "exposure from the total series"
    elif canary_weight is not None and 0 < canary_weight < 100:
        canary_share, baseline_share = canary_weight / 100.0, 1.0 - canary_weight / 100.0
        note = f"exposure from canary weight {canary_weight:g}%"
    else:
        canary_share = baseline_share = EQUAL_TRAFFIC_SHARE
        note = "no total series or canary weight: equal traffic assumed"

    canary = _side_blocks(
        samples.canary, samples.canary_total if has_totals else None, grid, spacing, canary_share
    )
    baseline = _side_blocks(
        samples.baseline, samples.baseline_total if has_totals else None, grid, spacing, baseline_share
    )
    judged = np.arange(grid.count) >= warmup_intervals
    paired = judged & (canary.exposure > 0) & (baseline.exposure > 0)
    judged_count = int(judged.sum())
    no_data_share = 1.0 - int(paired.sum()) / judged_count if judged_count else 1.0

    band = tolerance_band(metric.direction, metric.tolerance)
    canary_events, baseline_events = canary.events[paired], baseline.events[paired]
    share = canary.exposure[paired] / (canary.exposure[paired] + baseline.exposure[paired])
    sequence, dispersion = rate_ratio_sequence(canary_events, baseline_events, share, band, log_threshold)
    test = to_test_result(RATE_RATIO_TEST, sequence, band)

    total_canary_events = float(canary_events.sum())
    total_baseline_events = float(baseline_events.sum())
    detail = f"events {_count(total_canary_events)} vs {_count(total_baseline_events)}; {note}"
    if dispersion > 1.0:
        detail += f"; bursty (dispersion {dispersion:.1f})"
    if has_totals:
        # Visible on purpose: an empty result is also what a misspelt query returns.
        empty = [
            side
            for side, points in (("canary", samples.canary), ("baseline", samples.baseline))
            if not points.size
        ]
        if empty:
            detail += f"; no {' or '.join(empty)} series returned, counted as 0 events"
    return MetricEvidence(
        tests=(test,),
        canary_samples=canary.samples,
        baseline_samples=baseline.samples,
        intervals=int(paired.sum()),
        no_data_share=no_data_share,
        testable=bool(paired.any()),
        canary_value=_level(total_canary_events, canary, paired, has_totals),
        baseline_value=_level(total_baseline_events, baseline, paired, has_totals),
        detail=detail,
    )


class _SideBlocks:
    """Events and exposure per interval of one track."""

    def __init__(self, events: FloatArray, exposure: FloatArray, seconds: FloatArray, samples: int) -> None:
        self.events = events
        self.exposure = exposure
        self.seconds = seconds  # observed time per interval, for rates without a total series
        self.samples = samples


def _side_blocks(
    counts: Points, totals: Points | None, grid: BlockGrid, spacing: float, traffic_share: float
) -> _SideBlocks:
    count_times, count_rates = counts.times, counts.values
    if totals is not None:
        # The total series decides which scrapes exist; a missing error point there means zero errors.
        times = totals.times
        if np.array_equal(times, count_times):  # the usual case: both queried at the same steps
            rates = count_rates
        else:
            rates = _align(times, count_times, count_rates, spacing)
        exposure_per_point = np.maximum(totals.values, 0.0) * spacing
    else:
        times, rates = count_times, count_rates
        exposure_per_point = np.full(times.size, traffic_share * spacing)
    blocks = grid.index(times)
    inside = blocks >= 0
    blocks = blocks[inside]
    event_weights = np.maximum(rates[inside], 0.0) * spacing
    events = np.bincount(blocks, weights=event_weights, minlength=grid.count).astype(np.float64)
    exposure = np.bincount(blocks, weights=exposure_per_point[inside], minlength=grid.count).astype(
        np.float64
    )
    seconds = (np.bincount(blocks, minlength=grid.count) * spacing).astype(np.float64)
    return _SideBlocks(events, exposure, seconds, int(inside.sum()))


def _align(
    times: FloatArray, source_times: FloatArray, source_values: FloatArray, spacing: float
) -> FloatArray:
    """Values of ``source`` at ``times`` (nearest point within half a step), 0 where it has none."""
    aligned = np.zeros(times.size)
    if source_times.size == 0 or times.size == 0:
        return aligned
    right = np.clip(np.searchsorted(source_times, times), 0, source_times.size - 1)
    left = np.clip(right - 1, 0, source_times.size - 1)
    nearest = np.where(np.abs(source_times[left] - times) <= np.abs(source_times[right] - times), left, right)
    close = np.abs(source_times[nearest] - times) <= 0.5 * spacing
    aligned[close] = source_values[nearest[close]]
    return aligned


def _level(events: float, side: _SideBlocks, paired: np.ndarray, has_totals: bool) -> float | None:
    """Event ratio (events per total) with totals, otherwise mean rate in events per second."""
    denominator = float(side.exposure[paired].sum()) if has_totals else float(side.seconds[paired].sum())
    return events / denominator if denominator > 0 else None


def _has_data(points: Points | None) -> bool:
    return points is not None and points.size > 0


def _count(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"
