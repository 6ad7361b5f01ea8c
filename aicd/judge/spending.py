"""Spending a test's error budget over the looks of an analysis (internal to the judge).

A fixed-sample test (its level holds at one look) can run at every look when each look gets its own share
of the budget and the shares sum to at most the whole: by the union bound the chance that the test
rejects a canary within tolerance at *any* look is at most the sum. Unlike an anytime-valid e-process,
which must be ready to stop at any of infinitely many looks, this spends nothing on looks that never come,
so at the looks that do come its bounds are much tighter -- when the analysis knows how many intervals
it may last (its duration, or ``maxDuration`` when it may extend).

Looks are counted in judged intervals (the grid's intervals after the warm-up), which grow by one per
interval of the analysis. A look whose interval count repeats (the last look of a duration that is not a
whole number of intervals, where the trailing part is not yet an interval) runs the same test on the same
intervals, so it adds no new chance of a false alarm.

The shape: the planned looks ``first..last`` get weights growing like ``(j - first + 1) ** power``
(``power`` 0: evenly; 1 or 2: more of the budget where the data are more, at the end), together
``1 - tail``; looks after ``last`` (an analysis held up by a human pause runs longer than planned) share
``tail`` as ``tail * L / (k (k - 1))`` for the k-th look counted from ``first`` (L planned looks), a series
that sums to ``tail``. Without a plan, a look is the only one: it gets the whole budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr, ndtri

FloatArray = NDArray[np.float64]


@lru_cache(maxsize=1024)
def look_share(judged: int, first: int, last: int | None, power: float, tail: float) -> float:
    """The share of a test's budget spent at the look with ``judged`` intervals (0 if the test does not
    run there); ``last`` None: no plan, this look is the only one."""
    if judged < first:
        return 0.0
    if last is None:
        return 1.0
    planned = last - first + 1
    if planned < 1:
        return 0.0
    position = judged - first + 1
    if position > planned:
        return tail * planned / (position * (position - 1.0))
    total = sum(float(k) ** power for k in range(1, planned + 1))
    return (1.0 - tail) * float(position) ** power / total


GRID_POINTS_PER_SD = (
    20  # resolution of the recursion's grid (Simpson's rule: errors far below 1e-4 of a level)
)
GRID_LOW_Z = -8.0  # paths this far below zero (in sds of the score) never come back to cross


def planned_level(
    judged: int, first: int, last: int | None, power: float, tail: float, alpha: float
) -> float:
    """The nominal one-sided level of a group-sequential test at the look with ``judged`` intervals: its
    budget ``alpha`` is spent over the looks as :func:`look_share` says, but each look's level accounts for
    the looks before it seeing mostly the same data (:func:`group_sequential_levels`), so a look gets more
    than its spend. Every judged interval from ``first`` on counts as a look with equal information (a look
    that did not happen only lowers the chance of a false alarm). 0: the test does not run here."""
    if judged < first:
        return 0.0
    if last is None:
        return alpha
    looks = judged - first + 1
    # A look's level depends only on the looks up to it, so one recursion serves every look up to a
    # horizon; horizons double, so an analysis that runs long costs O(looks), not O(looks^2).
    horizon = 1 << max(0, looks - 1).bit_length()
    return _planned_levels(first, last, power, tail, alpha, horizon)[looks - 1]


@lru_cache(maxsize=256)
def _planned_levels(
    first: int, last: int, power: float, tail: float, alpha: float, looks: int
) -> tuple[float, ...]:
    spent: list[float] = []
    total = 0.0
    for look in range(first, first + looks):
        total += alpha * look_share(look, first, last, power, tail)
        spent.append(total)
    informations = [float(k) for k in range(1, looks + 1)]
    return tuple(group_sequential_levels(informations, spent))


def group_sequential_levels(informations: Sequence[float], spent: Sequence[float]) -> list[float]:
    """Nominal one-sided levels of a group-sequential test with the cumulative error ``spent`` after each
    look (Lan & DeMets): the statistic at look k is standard normal at the null's edge and the looks'
    statistics are correlated as a Brownian motion's at times ``informations`` (Corr = sqrt(I_i / I_k)), so
    the chance of crossing first at look k is spent[k] - spent[k-1] -- where a union bound over the looks
    would give each only its own spend as its level, much stricter when the looks share most of their data.

    A look whose information did not grow repeats the last statistic and spends nothing new (its level is
    the last one's). Computed by the recursive numerical integration of Armitage, McPherson and Rowe
    (Jennison & Turnbull, ch. 19) on a grid of the running score, with Simpson's rule."""
    levels: list[float] = []
    grid: FloatArray | None = None
    weights: FloatArray | None = (
        None  # sub-density of the score among paths not yet crossed x Simpson weights
    )
    last_information = 0.0
    last_spent = 0.0
    for information, total in zip(informations, spent, strict=True):
        increment = total - last_spent
        if information <= last_information or increment <= 0:
            levels.append(levels[-1] if levels else 0.0)
            continue
        sd = math.sqrt(information)
        if grid is None or weights is None:
            bound = float(-ndtri(increment)) * sd
            grid, simpson = _simpson_grid(GRID_LOW_Z * sd, bound, sd)
            weights = simpson * np.exp(-0.5 * (grid / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi))
        else:
            spread = math.sqrt(information - last_information)
            bound = _crossing_bound(grid, weights, spread, increment)
            new_grid, simpson = _simpson_grid(min(GRID_LOW_Z * sd, bound - sd), bound, sd)
            kernel = np.exp(-0.5 * ((new_grid[:, np.newaxis] - grid[np.newaxis, :]) / spread) ** 2)
            weights = simpson * (kernel @ weights) / (spread * math.sqrt(2.0 * math.pi))
            grid = new_grid
        levels.append(float(ndtr(-bound / sd)))
        last_information, last_spent = information, total
    return levels


def _simpson_grid(low: float, high: float, sd: float) -> tuple[FloatArray, FloatArray]:
    """An odd number of evenly spaced points from ``low`` to ``high`` and their Simpson weights."""
    intervals = max(2, 2 * math.ceil((high - low) / sd * GRID_POINTS_PER_SD / 2))
    grid = np.linspace(low, high, intervals + 1)
    step = (high - low) / intervals
    simpson = np.full(intervals + 1, 2.0)
    simpson[1::2] = 4.0
    simpson[0] = simpson[-1] = 1.0
    return grid, simpson * step / 3.0


def _crossing_bound(grid: FloatArray, weights: FloatArray, spread: float, increment: float) -> float:
    """The bound b at which paths continuing from the sub-density (``weights`` on ``grid``) cross above b
    with probability ``increment`` after a Gaussian step of sd ``spread`` (Newton's method, bracketed)."""

    def crossing(bound: float) -> float:
        return float(np.dot(weights, ndtr((grid - bound) / spread)))

    low, high = float(grid[0]) - 12.0 * spread, float(grid[-1]) + 12.0 * spread
    if crossing(low) <= increment:  # nearly everything has crossed already: nothing left to spend
        return low
    bound = float(grid[-1]) + float(-ndtri(min(0.5, increment))) * spread
    for _ in range(100):
        value = crossing(bound) - increment
        if abs(value) <= 1e-12 * max(increment, 1e-300) or high - low < 1e-12 * spread:
            break
        if value > 0:
            low = bound
        else:
            high = bound
        slope = -float(np.dot(weights, np.exp(-0.5 * ((grid - bound) / spread) ** 2))) / (
            spread * math.sqrt(2.0 * math.pi)
        )
        candidate = bound - value / slope if slope < 0 else 0.5 * (low + high)
        bound = candidate if low < candidate < high else 0.5 * (low + high)
    return bound
