"""Cutting series into analysis intervals ("blocks").

Prometheus points of one series are strongly autocorrelated (each is a ``rate(...[1m])`` or a histogram
quantile over a window that overlaps its neighbours), so treating scrapes as independent samples -- as
Kayenta does -- overstates the evidence many times over. The judge instead summarises each interval of
the analysis by one number per side and tests those: intervals at least as long as the query's range
window are close to independent, and pairing canary and baseline by interval cancels drift and load that
hit both tracks.

The grid starts at the earliest timestamp of the look and is the same at every look, so adding data only
appends intervals. A trailing interval is used once at least half of it has elapsed; before that its few
points would make it an unusually noisy observation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aicd.judge.model import MetricSamples, Series

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

MIN_INFERRED_BLOCK_SECONDS = 30.0
POINTS_PER_INFERRED_BLOCK = 5  # the analysis activity queries about five points per interval


@dataclass(frozen=True)
class BlockGrid:
    origin: float
    length: float
    count: int

    def index(self, timestamps: FloatArray) -> IntArray:
        """Interval index of each timestamp; -1 for points outside the grid."""
        raw = np.floor((timestamps - self.origin) / self.length).astype(np.int64)
        raw[(raw < 0) | (raw >= self.count)] = -1
        return raw


@dataclass(frozen=True)
class Points:
    """The finite points of one series as sorted arrays."""

    times: FloatArray
    values: FloatArray
    gaps: FloatArray  # positive gaps between consecutive points (the query step, mostly)

    @property
    def size(self) -> int:
        return int(self.values.size)

    @classmethod
    def of(cls, series: Series | None) -> Points:
        times, values = series_arrays(series)
        gaps = np.diff(times)
        return cls(times, values, gaps[gaps > 0])


@dataclass(frozen=True)
class PreparedSamples:
    """A metric's samples converted to arrays once per look."""

    canary: Points
    baseline: Points
    canary_total: Points | None
    baseline_total: Points | None
    baseline_pods: tuple[Points, ...] = ()

    @classmethod
    def of(cls, samples: MetricSamples) -> PreparedSamples:
        def optional(series: Series | None) -> Points | None:
            return None if series is None else Points.of(series)

        return cls(
            Points.of(samples.canary),
            Points.of(samples.baseline),
            optional(samples.canary_total),
            optional(samples.baseline_total),
            tuple(Points.of(series) for series in samples.baseline_pods),
        )

    def all_points(self) -> list[Points]:
        candidates = (self.canary, self.baseline, self.canary_total, self.baseline_total)
        return [points for points in candidates if points is not None]


def series_arrays(series: Series | None) -> tuple[FloatArray, FloatArray]:
    """Timestamps and values of the finite points, sorted by time."""
    if series is None or len(series) == 0:
        empty = np.zeros(0)
        return empty, empty
    timestamps = np.asarray(series.timestamps, dtype=np.float64)
    values = np.asarray(series.values, dtype=np.float64)
    keep = np.isfinite(values) & np.isfinite(timestamps)
    timestamps, values = timestamps[keep], values[keep]
    if timestamps.size > 1 and np.any(np.diff(timestamps) < 0):
        order = np.argsort(timestamps, kind="stable")
        timestamps, values = timestamps[order], values[order]
    return timestamps, values


def typical_spacing(series: list[Points]) -> float | None:
    """Median gap between consecutive points (the query step), over all series given."""
    gaps = [points.gaps for points in series if points.gaps.size]
    if not gaps:
        return None
    return float(np.median(np.concatenate(gaps) if len(gaps) > 1 else gaps[0]))


def make_grid(origin: float, end: float, spacing: float | None, interval_seconds: float | None) -> BlockGrid:
    """Intervals of ``interval_seconds`` (default: five query steps, at least 30 s) from ``origin``."""
    if interval_seconds is not None and interval_seconds > 0:
        length = float(interval_seconds)
    elif spacing is not None:
        length = max(MIN_INFERRED_BLOCK_SECONDS, POINTS_PER_INFERRED_BLOCK * spacing)
    else:
        length = MIN_INFERRED_BLOCK_SECONDS
    if spacing is not None:
        length = max(length, spacing)  # every interval can hold at least one point
    span = max(0.0, end - origin)
    full = math.floor(span / length)
    trailing = span - full * length
    count = full + (1 if trailing >= 0.5 * length else 0)
    return BlockGrid(origin=origin, length=length, count=max(1, count))


@dataclass(frozen=True)
class BlockSummary:
    """Per-interval robust summaries of one side of a continuous metric (NaN where not computable)."""

    points: IntArray  # points in each interval
    location: FloatArray  # trimmed mean
    spread: FloatArray | None  # mean absolute deviation from the median, when asked for


TRIM_SHARE = 0.2  # trimmed from each end: robust to a spike in a few scrapes, efficient otherwise


def summarise_blocks(
    values: FloatArray, block_of_point: IntArray, count: int, with_spread: bool
) -> BlockSummary:
    """Vectorised per-interval trimmed mean (and spread) of ``values`` (already transformed, e.g. log)."""
    keep = block_of_point >= 0
    values, blocks = values[keep], block_of_point[keep]
    points = np.bincount(blocks, minlength=count).astype(np.int64)
    location = np.full(count, np.nan)
    if values.size == 0:
        return BlockSummary(points, location, np.full(count, np.nan) if with_spread else None)
    order = np.lexsort((values, blocks))  # by interval, then by value
    values, blocks = values[order], blocks[order]
    starts = np.concatenate(([0], np.cumsum(points)[:-1]))
    # Trimmed sums from a running sum over the sorted values: interval i keeps its sorted values
    # [starts_i + trim_i, starts_i + points_i - trim_i).
    trim = np.floor(TRIM_SHARE * points).astype(np.int64)
    running = np.concatenate(([0.0], np.cumsum(values)))
    has_points = points > 0
    kept = points - 2 * trim
    trimmed_sum = running[starts + trim + kept] - running[starts + trim]
    location[has_points] = trimmed_sum[has_points] / kept[has_points]
    spread = None
    if with_spread:
        spread = np.full(count, np.nan)
        lower_middle = starts + np.maximum(points - 1, 0) // 2
        upper_middle = starts + points // 2
        safe_lower = np.minimum(lower_middle, values.size - 1)
        safe_upper = np.minimum(upper_middle, values.size - 1)
        median = 0.5 * (values[safe_lower] + values[safe_upper])
        deviations = np.bincount(blocks, weights=np.abs(values - median[blocks]), minlength=count)
        spread[has_points] = deviations[has_points] / points[has_points]
    return BlockSummary(points, location, spread)


def recent_median(
    timestamps: FloatArray, values: FloatArray, grid: BlockGrid, minimum_points: int
) -> float | None:
    """Median of the most recent interval's values (at least ``minimum_points`` of the latest points),
    so an absolute limit trips on a persistent level, not on one scrape."""
    if values.size == 0:
        return None
    blocks = grid.index(timestamps)
    inside = blocks >= 0
    if not inside.any():
        return None
    last_block = int(blocks[inside].max())
    recent = values[inside & (blocks == last_block)]
    if recent.size < minimum_points:
        recent = values[inside][-minimum_points:]
    return float(np.median(recent))


def minimum_points_per_block(points: IntArray) -> int:
    """An interval takes part only if a side has at least a quarter of its usual number of points there,
    so one stray scrape does not count as a whole interval's observation."""
    populated = points[points > 0]
    if populated.size == 0:
        return 1
    return max(1, math.ceil(0.25 * float(np.median(populated))))
