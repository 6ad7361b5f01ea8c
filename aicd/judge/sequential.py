"""Anytime-valid confidence bounds and the tests read off them.

The judge sees all data since the analysis began at every look and may stop at any look, so a
fixed-sample test (Kayenta's Mann-Whitney re-run on the growing window) inflates false alarms with every
look. Everything here is built from test martingales instead: for a candidate value ``v`` of the
parameter, ``E_t(v)`` is a nonnegative martingale with mean 1 when ``v`` is the truth, so by Ville's
inequality ``P(sup_t E_t(v_true) >= 1/alpha) <= alpha``. Mixing the likelihood ratio over alternatives
*above* ``v`` gives a lower confidence bound ``L_t = inf{v : E_t(v) < 1/alpha}`` that holds at all looks
at once with probability >= 1 - alpha (a confidence sequence; Howard et al. 2021, Lindon et al.,
KDD 2022); alternatives below give the upper bound.

Each test gives two decisions from two bounds at two levels:

* *fail* when the bound on the bad side lies beyond the tolerance band -- for "increase is bad", when even
  the lower bound exceeds 1 + tolerance: were the truth inside the band, the bound would have had to miss
  it, which happens with probability <= the fail level (the metric's share of alpha). The reported e-value
  is ``E_t`` at the band's edge; "e-value >= 1/alpha_i" and "bound beyond the band" are the same decision
  (both families below are monotone in ``v``). A band bounded on both sides splits the fail level.
* *shown within* (pass) when the bound on the good side lies inside the band -- for "increase is bad", the
  upper bound below 1 + tolerance: were the truth beyond the band, that bound would have had to miss it,
  which happens with probability <= the pass level.

Besides the sequences, two fixed-sample tests serve the tests whose budget is spent over the looks of a
plan (:mod:`aicd.judge.spending`): ``t_test``, a Student t-test with its noise estimated around a fitted
line and widened for correlated intervals, and ``rate_ratio_test``, a likelihood-ratio test of the same
conditional binomial model as the rate-ratio sequence. ``poisson_rate_bounds`` bounds one track's event
ratio (the absolute part of a count metric's band); ``interval_correlation`` reads how much consecutive
intervals' means correlate from the query-step series.

Why both kinds. A mixture sequence pays for being ready to stop at any of infinitely many looks: at the
last look of a 20-interval analysis its bound is as wide as a fixed-sample bound at a level ~25 times
smaller. A group-sequential test that knows the plan spends its budget only on the looks that come and
lets each look profit from the earlier ones seeing the same data; on a low-traffic canary whose errors
double it finds twice as many regressions by the end (bench/judge.py). The sequence keeps the early looks,
where the fixed-sample t-test's few intervals leave its noise estimate too uncertain.

* ``t_mixture``: Gaussian observations (per-interval differences of continuous metrics) with unknown mean
  and *unknown variance*. With the right-Haar prior on sigma and a half-normal prior HN(g) on the
  standardised effect ``delta = (mu - v) / sigma``, the Bayes factor of the scale-invariant reduction is a
  test martingale at ``v`` (Perez-Ortiz, Lardy, de Heide & Grunwald 2024, "E-statistics, group invariance
  and anytime valid testing"). Integrating sigma and delta in closed form gives

      BF+(t, n; g) = 2 * BF2(t, n; g) * F_t[n](n t sqrt(g) / sqrt(t^2 + nu (1 + n g)))

  where ``BF2 = (1+ng)^(-1/2) [(1 + t^2/nu) / (1 + t^2/(nu (1+ng)))]^(n/2)`` is the two-sided JZS-type
  factor (Rouder et al. 2009), ``nu = n - 1`` and ``F_t[n]`` the Student-t CDF with n degrees of freedom.
  It grows with t, so the bound is ``mean - t_crit(n) * s / sqrt(n)``. An equal-weight mixture over
  several g covers effects from one noise sd per interval to dozens, at a price of log(len(G)).
* ``rate_ratio``: event counts. Given an interval's total number of events, the canary's share is
  Binomial with ``p = rho w / (rho w + 1 - w)`` (``w`` its share of the exposure, ``rho`` the rate ratio):
  conditioning on the total cancels load that hits both tracks. The mixture over log(rho) above ``v``
  (half-normal offsets, on a fine grid) of these likelihood ratios is a test martingale at ``v``; the
  log-likelihood is concave in log(rho), which makes ``E_t(v)`` monotone. Burstiness beyond Poisson is
  absorbed by dividing the log-likelihood by a Pearson dispersion estimate (quasi-likelihood; an
  approximation that only corrects dispersion clearly beyond Poisson noise, and only ever widens bounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_ndtr, ndtri, stdtr, stdtrit

FloatArray = NDArray[np.float64]

# Prior variances of the standardised per-interval effect of the t-mixture: from a subtle shift (about
# one noise sd per interval, found over many intervals) to a gross one (tens of sds, found in a few).
T_MIXTURE_G = np.array([0.5, 4.0, 32.0, 256.0])

# Half-normal scales of the rate-ratio mixture, in log(rho) beyond the candidate value: from +30% to
# 20x and more, so "errors where the baseline had none" (rho -> infinity) fails after a few events.
RATE_PRIOR_SCALES = np.array([0.3, 1.0, 3.0])
LOG_RATIO_LIMIT = math.log(1000.0)  # ratios are resolved between 1/1000x and 1000x
LOG_RATIO_GRID = np.linspace(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT, 601)  # steps of 2.3% in the ratio
LOG_RATIO_GRID.flags.writeable = False
GRID_STEP = float(LOG_RATIO_GRID[1] - LOG_RATIO_GRID[0])


@dataclass(frozen=True)
class Band:
    """Acceptable values of a (log-scale) parameter; ``None`` == unbounded on that side, i.e. a change
    that way is never bad."""

    low: float | None
    high: float | None

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    @property
    def sides(self) -> int:
        return int(self.low is not None) + int(self.high is not None)


@dataclass(frozen=True)
class SequenceResult:
    """Estimate, bounds and the two decisions of one test of a (log-scale) parameter against a band.

    ``ci_low``/``ci_high`` are the fail-side bounds, each at level 1 - exp(-log_threshold) (``None``: not
    bounded yet); ``safe_low``/``safe_high`` the pass-side bounds at 1 - exp(-safe_log_threshold).
    ``log_evidence`` is the larger of the evidence values at the band's edges; ``rejected``: beyond the
    band (a regression), ``within``: the safe bounds lie inside it.
    """

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    log_evidence: float
    log_threshold: float  # per side: log(1/alpha_i), plus log 2 when both sides are judged
    rejected: bool
    observations: int
    safe_low: float | None = None
    safe_high: float | None = None
    safe_log_threshold: float = math.inf
    within: bool = False


def side_threshold(band: Band, log_threshold: float) -> float:
    """A band bounded on both sides splits the fail-side error budget over its two one-sided tests.

    The pass side needs no split: a canary beyond the band is beyond it on one side only, so only that
    side's bound can wrongly show it inside."""
    return log_threshold + (math.log(2.0) if band.sides == 2 else 0.0)


def inside(band: Band, low: float | None, high: float | None) -> bool:
    """Do the bounds that matter for ``band`` lie strictly inside it (``None``: unbounded, so no)?"""
    if band.high is not None and (high is None or high >= band.high):
        return False
    return not (band.low is not None and (low is None or low <= band.low))


def settle_factor(sequence: SequenceResult, band: Band) -> float | None:
    """How many times the data so far would bring the pass-side bound(s) inside the band if the estimate
    stayed where it is (a bound's distance from the estimate shrinks about like 1/sqrt(data)); ``None`` when
    the estimate is outside the band or nothing is bounded yet."""
    if sequence.estimate is None:
        return None
    factors = []
    for edge, bound in ((band.high, sequence.safe_high), (band.low, sequence.safe_low)):
        if edge is None:
            continue
        room = abs(edge - sequence.estimate)
        if bound is None or room <= 0 or (edge - sequence.estimate) * (bound - sequence.estimate) <= 0:
            return None
        factors.append((abs(bound - sequence.estimate) / room) ** 2)
    return max(factors) if factors else None


# ------------------------------------------------------------------------------ t-mixture (continuous)


def log_t_mixture(t: float, n: float) -> float:
    """log BF+(t, n): evidence that the mean is above the value at which the t-statistic is t."""
    nu = n - 1
    g = T_MIXTURE_G
    log_two_sided = -0.5 * np.log1p(n * g) + 0.5 * n * (
        math.log1p(t * t / nu) - np.log1p(t * t / (nu * (1.0 + n * g)))
    )
    tail = stdtr(n, n * t * np.sqrt(g) / np.sqrt(t * t + nu * (1.0 + n * g)))
    with np.errstate(divide="ignore"):
        terms = math.log(2.0) + log_two_sided + np.log(tail)
    top = float(np.max(terms))
    if not math.isfinite(top):
        return -math.inf
    return top + math.log(float(np.sum(np.exp(terms - top)))) - math.log(g.size)


@lru_cache(maxsize=4096)
def t_critical(n: float, log_threshold: float) -> float:
    """Smallest t whose e-value reaches exp(log_threshold) after n observations; ``inf`` if none can
    (with few observations the unknown variance caps the evidence)."""
    if n < 2:
        return math.inf
    g = T_MIXTURE_G
    ceiling = math.log(2.0) + np.log(np.mean(np.exp(0.5 * (n - 1) * np.log1p(n * g))))
    if ceiling <= log_threshold:
        return math.inf
    low, high = 0.0, 1.0
    while log_t_mixture(high, n) < log_threshold:
        low, high = high, high * 2.0
        if high > 1e12:
            return math.inf
    for _ in range(60):  # bisection: monotone in t; cached per (n, threshold)
        middle = 0.5 * (low + high)
        if log_t_mixture(middle, n) < log_threshold:
            low = middle
        else:
            high = middle
    return high


def t_mixture_sequence(
    observations: FloatArray,
    band: Band,
    log_threshold: float,
    safe_log_threshold: float = math.inf,
    autocorrelation: float = 0.0,
) -> SequenceResult:
    """Bounds for the mean of Gaussian ``observations`` (unknown variance); test of ``band``.

    ``autocorrelation`` (lag 1, >= 0) widens the bounds for series whose intervals are not independent
    (:func:`_correlated_size_and_error`).
    """
    threshold = side_threshold(band, log_threshold)
    count = int(observations.size)
    if count == 0:
        return SequenceResult(
            None, None, None, 0.0, threshold, False, 0, safe_log_threshold=safe_log_threshold
        )
    mean = float(np.mean(observations))
    n, standard_error = _correlated_size_and_error(observations, mean, autocorrelation)
    if n < 2:
        return SequenceResult(
            mean, None, None, 0.0, threshold, False, count, safe_log_threshold=safe_log_threshold
        )
    half_width = t_critical(n, threshold) * standard_error
    safe_half_width = t_critical(n, safe_log_threshold) * standard_error
    evidence = []
    if band.high is not None:  # increases are bad: evidence that the mean is above the band
        evidence.append(log_t_mixture((mean - band.high) / standard_error, n))
    if band.low is not None:
        evidence.append(log_t_mixture((band.low - mean) / standard_error, n))
    log_evidence = max(evidence) if evidence else 0.0
    safe_low = _finite_or_none(mean - safe_half_width)
    safe_high = _finite_or_none(mean + safe_half_width)
    return SequenceResult(
        estimate=mean,
        ci_low=_finite_or_none(mean - half_width),
        ci_high=_finite_or_none(mean + half_width),
        log_evidence=log_evidence,
        log_threshold=threshold,
        rejected=log_evidence >= threshold,
        observations=count,
        safe_low=safe_low,
        safe_high=safe_high,
        safe_log_threshold=safe_log_threshold,
        within=inside(band, safe_low, safe_high),
    )


T_TEST_DEGREES_SHARE = 0.75  # of the AR(1) degrees of freedom: the interval correlation is itself estimated


def t_test(
    observations: FloatArray, band: Band, log_threshold: float, autocorrelation: float = 0.0
) -> SequenceResult:
    """One-sided Student t-test(s) of the mean of ``observations`` against the band's edge(s), at level
    exp(-log_threshold) per side (split over two sides like the sequences): a fixed-sample test for one
    look, whose level the caller spreads over the looks it may run at (:mod:`aicd.judge.spending`).
    ``log_evidence`` is -log(p); the bounds are the t-interval's at that level.

    The noise is estimated around a straight line: the mean and the residuals of a fitted line are
    independent for Gaussian observations, so the test keeps its level whatever the means do as long as
    their average stays inside the band, and a regression that grows does not inflate its own noise
    estimate. ``autocorrelation`` r (lag 1, AR(1)) widens the standard error of the mean by
    sqrt((1 + r) / (1 - r)) and leaves n (1 - r^2) / (1 + r^2) observations' worth of information about the
    noise (Bartlett), of which the test counts only ``T_TEST_DEGREES_SHARE`` because r is an estimate too.
    """
    threshold = side_threshold(band, log_threshold)
    count = int(observations.size)
    if count < 3:
        estimate = float(np.mean(observations)) if count else None
        return SequenceResult(estimate, None, None, 0.0, threshold, False, count)
    mean = float(np.mean(observations))
    residuals = detrended(observations)
    sd = max(math.sqrt(float(np.dot(residuals, residuals)) / (count - 2)), 1e-9 * max(1.0, abs(mean)))
    r = min(max(autocorrelation, 0.0), 0.95)
    standard_error = sd * math.sqrt((1.0 + r) / ((1.0 - r) * count))
    degrees = max(1.0, T_TEST_DEGREES_SHARE * (count - 2) * (1.0 - r * r) / (1.0 + r * r))
    return t_test_result(mean, standard_error, degrees, band, threshold, count)


def t_test_result(
    estimate: float, standard_error: float, degrees: float, band: Band, threshold: float, count: int
) -> SequenceResult:
    """A t-statistic's verdict against the band's edge(s): -log(p) of the nearer side as evidence, the
    t-interval at level exp(-threshold) per side as bounds."""
    critical = -float(stdtrit(degrees, math.exp(-threshold)))
    log_p_values = []
    if band.high is not None:
        log_p_values.append(
            float(np.log(max(stdtr(degrees, -(estimate - band.high) / standard_error), 1e-300)))
        )
    if band.low is not None:
        log_p_values.append(
            float(np.log(max(stdtr(degrees, -(band.low - estimate) / standard_error), 1e-300)))
        )
    log_evidence = -min(log_p_values) if log_p_values else 0.0
    return SequenceResult(
        estimate=estimate,
        ci_low=estimate - critical * standard_error,
        ci_high=estimate + critical * standard_error,
        log_evidence=log_evidence,
        log_threshold=threshold,
        rejected=log_evidence >= threshold,
        observations=count,
    )


DEGREES_STEP = 0.05  # effective sizes are rounded down to this, so t_critical's cache is reused


def _correlated_size_and_error(
    observations: FloatArray, mean: float, autocorrelation: float
) -> tuple[float, float]:
    """The t-mixture's number of observations and the standard error of the mean for AR(1) observations
    with lag-1 correlation r: the noise sd is read from the sample sd corrected for its bias on a correlated
    series, the mean's variance widened by (1 + r) / (1 - r), and the sd estimate counts as n (1 - r^2) /
    (1 + r^2) observations (Bartlett). Deflating both to n (1 - r) / (1 + r) instead, as this did before,
    treated the noise estimate as worth less than it is: with a correlation of 0.3 assumed from the first
    interval, +25% latency was found at a median interval of 12 instead of 9 (bench/judge.py's world)."""
    count = int(observations.size)
    if count < 2:
        return float(count), math.inf
    r = min(max(autocorrelation, 0.0), 0.95)
    lags = np.arange(1, count)
    carried = float(np.sum((1.0 - lags / count) * r**lags))
    bias = 1.0 - 2.0 * carried / (count - 1)  # E[s^2] / sigma^2
    sd = max(float(np.std(observations, ddof=1)) / math.sqrt(bias), 1e-9 * max(1.0, abs(mean)))
    error = sd * math.sqrt((1.0 + r) / ((1.0 - r) * count))
    degrees = count * (1.0 - r * r) / (1.0 + r * r)
    return math.floor(degrees / DEGREES_STEP + 1e-9) * DEGREES_STEP, error


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def lag_one_autocorrelation(observations: FloatArray) -> float:
    """Lag-1 autocorrelation of a short series, shrunk by one standard error (1/sqrt(n)) and floored at 0.

    Interval summaries of most metrics are close to independent and their estimated autocorrelation is
    noise; the shrinkage keeps that noise from costing power, while slowly wandering metrics (memory, a
    single pod's drift) get their effective sample size cut. From eight observations on, a straight-line
    trend is removed first, so a regression that grows is not mistaken for a wandering metric. Below four
    observations: 0.
    """
    n = int(observations.size)
    if n < 4:
        return 0.0
    centred = detrended(observations) if n >= 8 else observations - observations.mean()
    denominator = float(np.dot(centred, centred))
    if denominator <= 0:
        return 0.0
    estimate = float(np.dot(centred[:-1], centred[1:])) / denominator
    return max(0.0, estimate - 1.0 / math.sqrt(n))


def lagged_autocorrelation(values: FloatArray, lag: int) -> float:
    """Autocorrelation at ``lag`` steps of an evenly spaced series with gaps (NaN), after removing a
    straight-line trend; shrunk by one standard error (1/sqrt(pairs)) and floored at 0.

    On the query-step series this sees, after a few intervals, what the interval summaries cannot show
    until there are many of them: whether the level one interval later still remembers this one (a single
    canary pod sitting high for minutes)."""
    if lag < 1 or values.size <= lag:
        return 0.0
    present = np.isfinite(values)
    positions = np.flatnonzero(present).astype(np.float64)
    if positions.size < 8:
        return 0.0
    residuals = np.full(values.size, np.nan)
    residuals[present] = detrended(values[present], positions)
    first, second = residuals[:-lag], residuals[lag:]
    both = np.isfinite(first) & np.isfinite(second)
    pairs = int(both.sum())
    denominator = float(np.nanmean(residuals**2))
    if pairs < 8 or denominator <= 0:
        return 0.0
    estimate = float(np.mean(first[both] * second[both])) / denominator
    return max(0.0, estimate - 1.0 / math.sqrt(pairs))


def interval_correlation(values: FloatArray, per_interval: int, prior: float) -> float:
    """The lag-1 correlation of consecutive intervals' means that the tests use: ``prior`` until the series
    has ``CORRECTED_FROM_INTERVALS`` intervals, then the estimate (:func:`estimated_interval_correlation`)
    shrunk towards the prior, which counts as ``PRIOR_INTERVALS`` intervals of it -- a weighted mean, not a
    switch, so the noisy estimate of a short series moves the tests gradually.

    Why a prior: before eight intervals a line through so few of them absorbs nearly all of a wander that
    lasts an interval, and the data cannot tell 0 from 0.7 (below). Read as about 0 there, a canary exactly
    at the edge of the tolerance (bench/judge.py's p50, true correlation 0.36) failed the early looks of the
    anytime-valid test several times its share; with a prior of 0.3 none of 2000 runs failed before the
    eighth."""
    estimate = estimated_interval_correlation(values, per_interval)
    if estimate is None:
        return prior
    readable = round(values.size / per_interval) - CORRECTED_FROM_INTERVALS + 1
    return (PRIOR_INTERVALS * prior + readable * estimate) / (PRIOR_INTERVALS + readable)


def estimated_interval_correlation(values: FloatArray, per_interval: int) -> float | None:
    """Lag-1 correlation of the means of consecutive intervals of ``per_interval`` steps, implied by the
    autocovariances of an evenly spaced series with gaps (NaN) at lags 0 .. 2 per_interval - 1, after
    removing a straight-line trend (a regression that grows is not correlation); in [0, 0.95]. ``None``
    before ``CORRECTED_FROM_INTERVALS`` intervals or when the series cannot say.

    Covariances around a line fitted to the series itself are biased low by that fit's error, which on a
    short, correlated series is most of the interval covariance: 0.36 between neighbouring 1-min summaries
    reads 0.01-0.03 after five intervals and 0.14-0.23 after twenty, so fixed-sample tests that trusted it
    rejected a canary at the edge of the tolerance twice as often as their level allows. The raw ratio is
    therefore mapped back through its expectation for AR(1) interval means
    (:func:`_expected_raw_correlations`): unbiased on average, though noisy (sd about 0.2 at twenty
    intervals). Before eight intervals there is nothing to correct: the raw ratio barely moves with the
    correlation (-0.5 to -0.34 over 0 to 0.7 at five)."""
    b = per_interval
    if b < 1 or round(values.size / b) < CORRECTED_FROM_INTERVALS:
        return None
    present = np.isfinite(values)
    positions = np.flatnonzero(present).astype(np.float64)
    if positions.size < 2 * b:
        return None
    residuals = np.zeros(values.size)
    residuals[present] = detrended(values[present], positions)
    weights = present.astype(np.float64)
    covariances = np.empty(2 * b)
    for lag in range(2 * b):
        pairs = float(np.dot(weights[: values.size - lag], weights[lag:]))
        if pairs < 1:
            return None
        covariances[lag] = float(np.dot(residuals[: values.size - lag], residuals[lag:])) / pairs
    within, across = _interval_lag_matrices(b)
    variance = float(np.dot(within, covariances))
    if variance <= 0:
        return None
    raw = float(np.dot(across, covariances)) / variance
    # The expectation rises with the true correlation: read off the correlation that expects the raw ratio.
    expected = _expected_raw_correlations(round(values.size / b))
    return float(np.interp(raw, expected, CORRELATION_GRID, left=0.0, right=float(CORRELATION_GRID[-1])))


CORRECTED_FROM_INTERVALS = 8
PRIOR_INTERVALS = 12  # the prior counts as this many readable intervals of the estimate
CORRELATION_GRID = np.linspace(0.0, 0.95, 96)
CORRELATION_GRID.flags.writeable = False


@lru_cache(maxsize=256)
def _expected_raw_correlations(intervals: int) -> FloatArray:
    """For AR(1) interval means at each correlation of ``CORRELATION_GRID``: the expected lag-1 covariance
    over the expected variance of the residuals of a straight line fitted to ``intervals`` of them."""
    n = intervals
    index = np.arange(n, dtype=np.float64)
    design = np.column_stack((np.ones(n), index))
    residual_maker = np.eye(n) - design @ np.linalg.pinv(design)
    result = np.empty(CORRELATION_GRID.size)
    for position, rho in enumerate(CORRELATION_GRID):
        covariance = residual_maker @ (rho ** np.abs(np.subtract.outer(index, index))) @ residual_maker
        result[position] = (float(np.trace(covariance, offset=1)) / (n - 1)) / (
            float(np.trace(covariance)) / n
        )
    result.flags.writeable = False
    return result


@lru_cache(maxsize=64)
def _interval_lag_matrices(per_interval: int) -> tuple[FloatArray, FloatArray]:
    """How often each lag 0 .. 2b-1 occurs among the pairs of steps inside one interval and between two
    consecutive ones (normalised), so that mean covariances are dot products."""
    b = per_interval
    steps = np.arange(b)
    within = np.bincount(np.abs(np.subtract.outer(steps, steps)).ravel(), minlength=2 * b) / (b * b)
    across = np.bincount(np.subtract.outer(steps + b, steps).ravel(), minlength=2 * b) / (b * b)
    within.flags.writeable = False
    across.flags.writeable = False
    return within.astype(np.float64), across.astype(np.float64)


def detrended(values: FloatArray, positions: FloatArray | None = None) -> FloatArray:
    """Residuals of the least-squares line through ``values`` (at ``positions``, default 0, 1, 2, ...)."""
    x = np.arange(values.size, dtype=np.float64) if positions is None else positions
    x = x - x.mean()
    centred = values - values.mean()
    spread = float(np.dot(x, x))
    slope = float(np.dot(x, centred)) / spread if spread > 0 else 0.0
    result: FloatArray = centred - slope * x
    return result


# ------------------------------------------------------------------------------- rate ratio (counts)


def rate_ratio_sequence(
    canary_events: FloatArray,
    baseline_events: FloatArray,
    canary_share: FloatArray,
    band: Band,
    log_threshold: float,
    safe_log_threshold: float = math.inf,
) -> tuple[SequenceResult, float]:
    """Bounds for log(rho), the canary/baseline rate ratio, from per-interval event counts, the test of
    ``band``, and the dispersion factor used.

    ``canary_share`` is the canary's share of the exposure in each interval.
    """
    threshold = side_threshold(band, log_threshold)
    observations = int(canary_events.size)
    if float(np.sum(canary_events) + np.sum(baseline_events)) <= 0:
        empty = SequenceResult(
            None, None, None, 0.0, threshold, False, observations, safe_log_threshold=safe_log_threshold
        )
        return empty, 1.0
    likelihood = _GridLikelihood(canary_events, baseline_events, canary_share)
    evidence = []
    if band.high is not None:
        evidence.append(likelihood.log_evidence_above(band.high))
    if band.low is not None:
        evidence.append(likelihood.log_evidence_below(band.low))
    log_evidence = max(evidence) if evidence else 0.0
    safe_low = likelihood.lower_bound(safe_log_threshold) if math.isfinite(safe_log_threshold) else None
    safe_high = likelihood.upper_bound(safe_log_threshold) if math.isfinite(safe_log_threshold) else None
    result = SequenceResult(
        estimate=likelihood.estimate,
        ci_low=likelihood.lower_bound(threshold),
        ci_high=likelihood.upper_bound(threshold),
        log_evidence=log_evidence,
        log_threshold=threshold,
        rejected=log_evidence >= threshold,
        observations=observations,
        safe_low=safe_low,
        safe_high=safe_high,
        safe_log_threshold=safe_log_threshold,
        within=inside(band, safe_low, safe_high),
    )
    return result, likelihood.dispersion


def rate_ratio_test(
    canary_events: FloatArray,
    baseline_events: FloatArray,
    canary_share: FloatArray,
    band: Band,
    log_threshold: float,
) -> tuple[SequenceResult, float]:
    """Fixed-sample test of log(rho) against the band's edge(s) at level exp(-log_threshold) per side
    (split over two sides like the sequences), and the dispersion factor used.

    The signed root of the (quasi-)likelihood ratio between the best log(rho) and the band's edge is close
    to standard normal at the edge -- with a few events too, far better than a Wald statistic -- so
    ``log_evidence`` is -log of its normal tail probability (the p-value) and the bounds are where that root
    reaches the critical value (the likelihood-ratio interval at the test's level). Same conditional
    binomial likelihood and dispersion factor as :func:`rate_ratio_sequence`.
    """
    threshold = side_threshold(band, log_threshold)
    observations = int(canary_events.size)
    if float(np.sum(canary_events) + np.sum(baseline_events)) <= 0:
        return SequenceResult(None, None, None, 0.0, threshold, False, observations), 1.0
    likelihood = _ConditionalLikelihood(canary_events, baseline_events, canary_share)
    best = likelihood.maximum()
    dispersion = quasi_dispersion(canary_events, baseline_events, canary_share, best)
    peak = likelihood.at(best)
    critical = float(-ndtri(math.exp(-threshold)))
    drop = 0.5 * critical * critical * dispersion  # the log-likelihood drop that reaches the critical value

    def log_p_beyond(edge: float, upward: bool) -> float:
        """log p of the one-sided test that log(rho) is beyond ``edge`` (above it, or below it)."""
        root = math.sqrt(max(0.0, 2.0 * (peak - likelihood.at(edge)) / dispersion))
        signed = root if (best > edge) == upward else -root
        return float(log_ndtr(-signed))

    log_p_values = []
    if band.high is not None:
        log_p_values.append(log_p_beyond(band.high, upward=True))
    if band.low is not None:
        log_p_values.append(log_p_beyond(band.low, upward=False))
    log_evidence = -min(log_p_values) if log_p_values else 0.0
    result = SequenceResult(
        estimate=best,
        ci_low=likelihood.drop_point(best, peak, drop, upward=False),
        ci_high=likelihood.drop_point(best, peak, drop, upward=True),
        log_evidence=log_evidence,
        log_threshold=threshold,
        rejected=log_evidence >= threshold,
        observations=observations,
    )
    return result, dispersion


class _ConditionalLikelihood:
    """The conditional binomial log-likelihood of log(rho) as a smooth function (the fixed-sample test)."""

    def __init__(
        self, canary_events: FloatArray, baseline_events: FloatArray, canary_share: FloatArray
    ) -> None:
        totals = canary_events + baseline_events
        used = totals > 0
        self._canary = canary_events[used]
        self._totals = totals[used]
        self._offsets = np.log(canary_share[used]) - np.log1p(-canary_share[used])

    def at(self, log_ratio: float) -> float:
        linear = log_ratio + self._offsets
        return float(self._canary @ linear - self._totals @ np.logaddexp(0.0, linear))

    def maximum(self) -> float:
        """The maximum-likelihood log(rho) (Newton's method on the concave log-likelihood, kept inside the
        ratios the judge resolves); the end of that range when the canary or the baseline has no events."""
        low, high = -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT
        canary = float(self._canary.sum())
        if canary <= 0:
            return low
        if canary >= float(self._totals.sum()):
            return high
        # Start from the pooled odds ratio: exact when every interval has the same exposure share.
        pooled = math.log(canary / (float(self._totals.sum()) - canary))
        value = min(high, max(low, pooled - float(np.average(self._offsets, weights=self._totals))))
        for _ in range(50):
            share = 1.0 / (1.0 + np.exp(-(value + self._offsets)))
            score = float(np.sum(self._canary - self._totals * share))
            information = float(np.sum(self._totals * share * (1.0 - share)))
            if information <= 0:
                break
            step = score / information
            value = min(high, max(low, value + step))
            if abs(step) < 1e-10:
                break
        return value

    def drop_point(self, best: float, peak: float, drop: float, upward: bool) -> float:
        """Where the log-likelihood has fallen by ``drop`` from its ``peak`` at ``best``, above or below it
        (the end of the resolved range if it never falls that far there)."""
        end = LOG_RATIO_LIMIT if upward else -LOG_RATIO_LIMIT
        if peak - self.at(end) <= drop:
            return end
        near, far = best, end
        for _ in range(40):
            middle = 0.5 * (near + far)
            if peak - self.at(middle) <= drop:
                near = middle
            else:
                far = middle
        return 0.5 * (near + far)


COARSE_STEP = 6  # every 6th grid point locates where the likelihood lives
NEGLIGIBLE_LOG_LIKELIHOOD = 60.0  # grid points this far below the peak add < 1e-26 to any mixture


class _GridLikelihood:
    """The (quasi-)log-likelihood of log(rho) on the part of the grid where it is not negligible."""

    def __init__(
        self, canary_events: FloatArray, baseline_events: FloatArray, canary_share: FloatArray
    ) -> None:
        self._canary = canary_events
        self._baseline = baseline_events
        self._totals = canary_events + baseline_events
        self._offsets = np.log(canary_share) - np.log1p(-canary_share)  # logit of the exposure share
        coarse = LOG_RATIO_GRID[::COARSE_STEP]
        coarse_values = self._raw(coarse)
        keep = np.flatnonzero(coarse_values > coarse_values.max() - NEGLIGIBLE_LOG_LIKELIHOOD)
        # Concavity makes the relevant set an interval; one coarse step of margin each side.
        self.first = max(0, (int(keep[0]) - 1) * COARSE_STEP)
        last = min(LOG_RATIO_GRID.size, (int(keep[-1]) + 1) * COARSE_STEP + 1)
        self.grid = LOG_RATIO_GRID[self.first : last]
        values = self._raw(self.grid)
        best = int(np.argmax(values))
        self.estimate = float(self.grid[best])
        self.dispersion = quasi_dispersion(canary_events, baseline_events, canary_share, self.estimate)
        self.values = values / self.dispersion

    def _raw(self, log_ratios: FloatArray) -> FloatArray:
        linear = log_ratios[np.newaxis, :] + self._offsets[:, np.newaxis]  # logit of the canary's event share
        # log p = -softplus(-linear) = linear - softplus(linear), log(1 - p) = -softplus(linear)
        softplus = np.logaddexp(0.0, linear)
        result: FloatArray = self._canary @ linear - self._totals @ softplus
        return result

    def at(self, log_ratio: float) -> float:
        return float(self._raw(np.array([log_ratio]))[0]) / self.dispersion

    def log_evidence_above(self, value: float) -> float:
        """log E(value): mixture over alternatives above ``value`` vs ``value`` itself."""
        return self._log_evidence(value, self.at(value), upward=True)

    def log_evidence_below(self, value: float) -> float:
        return self._log_evidence(value, self.at(value), upward=False)

    def _log_evidence(self, value: float, log_likelihood_at_value: float, upward: bool) -> float:
        # The discrete mixing distribution: half-normal weights on the full grid's points beyond
        # ``value``, normalised; only points in the relevant window contribute noticeably.
        normaliser = _prior_normaliser(value, upward)
        if normaliser <= 0:
            return -math.inf
        offsets = (self.grid - value) if upward else (value - self.grid)
        use = offsets > 0
        if not use.any():
            return -math.inf
        log_weights = np.log(_half_normal_mixture(offsets[use]) / normaliser)
        terms = log_weights + self.values[use] - log_likelihood_at_value
        top = float(terms.max())
        return top + math.log(float(np.sum(np.exp(terms - top))))

    def _log_evidence_everywhere(self, upward: bool) -> FloatArray:
        """``_log_evidence`` at every window grid point at once: there the offsets are whole grid
        steps, so the mixture sums are one convolution of exp(log-likelihood) with the prior weights."""
        log_weights, cumulative = _grid_prior()
        size = self.grid.size
        peak = float(self.values.max())
        relative = np.exp(self.values - peak)
        weights = np.exp(log_weights[:size])  # index = offset in grid steps; weights[0] == 0
        global_index = self.first + np.arange(size)
        if upward:  # sum_m w_m L_{k+m}: convolve the reversed likelihood
            sums = np.convolve(relative[::-1], weights)[size - 1 :: -1][:size]
            normalisers = cumulative[LOG_RATIO_GRID.size - 1 - global_index]
        else:  # sum_m w_m L_{k-m}
            sums = np.convolve(relative, weights)[:size]
            normalisers = cumulative[global_index]
        with np.errstate(divide="ignore", invalid="ignore"):
            result: FloatArray = np.log(sums) - np.log(normalisers) + peak - self.values
        return np.where((sums > 0) & (normalisers > 0), result, -np.inf)

    def lower_bound(self, threshold: float) -> float:
        """Smallest grid value whose upward evidence is below the threshold (it falls monotonically)."""
        below = np.flatnonzero(self._log_evidence_everywhere(upward=True) < threshold)
        return float(self.grid[below[0]] if below.size else self.grid[-1])

    def upper_bound(self, threshold: float) -> float:
        below = np.flatnonzero(self._log_evidence_everywhere(upward=False) < threshold)
        return float(self.grid[below[-1]] if below.size else self.grid[0])


@lru_cache(maxsize=1)
def _grid_prior() -> tuple[FloatArray, FloatArray]:
    """log of the half-normal mixture density at whole grid steps (index 0 unused) and the cumulative
    sums of the density, which normalise the discrete prior beyond any grid point."""
    density = _half_normal_mixture(np.arange(LOG_RATIO_GRID.size, dtype=np.float64) * GRID_STEP)
    density[0] = 0.0
    cumulative = np.cumsum(density)
    with np.errstate(divide="ignore"):
        log_density = np.log(density)
    log_density.flags.writeable = False
    cumulative.flags.writeable = False
    return log_density, cumulative


@lru_cache(maxsize=256)
def _prior_normaliser(value: float, upward: bool) -> float:
    """Total half-normal weight of the grid points beyond ``value`` (the band edges recur every look)."""
    offsets = (LOG_RATIO_GRID - value) if upward else (value - LOG_RATIO_GRID)
    return float(np.sum(_half_normal_mixture(offsets[offsets > 0])))


def _half_normal_mixture(offsets: FloatArray) -> FloatArray:
    scales = RATE_PRIOR_SCALES[:, np.newaxis]
    density: FloatArray = np.mean(np.exp(-0.5 * (offsets[np.newaxis, :] / scales) ** 2) / scales, axis=0)
    return density


def quasi_dispersion(
    canary_events: FloatArray, baseline_events: FloatArray, canary_share: FloatArray, log_ratio: float
) -> float:
    """Pearson estimate of extra-binomial dispersion across intervals, less one standard error, floored at 1.

    Independent Poisson arrivals give about 1; version-specific bursts (one sick pod, a retry storm) give
    more. The Pearson ratio of pure Poisson data scatters around 1 with sd sqrt(2/df), so only the excess
    beyond that is corrected -- a plain max(1, ratio) would discount ~20% of the evidence of every
    well-behaved metric. With fewer than three intervals there is nothing to estimate it from: 1.
    """
    totals = canary_events + baseline_events
    used = totals > 0
    degrees_of_freedom = int(used.sum()) - 1
    if degrees_of_freedom < 2:
        return 1.0
    linear = log_ratio + np.log(canary_share[used]) - np.log1p(-canary_share[used])
    share = np.clip(1.0 / (1.0 + np.exp(-linear)), 1e-9, 1 - 1e-9)
    expected = totals[used] * share
    variance = totals[used] * share * (1 - share)
    pearson = float(np.sum((canary_events[used] - expected) ** 2 / variance)) / degrees_of_freedom
    return max(1.0, pearson - math.sqrt(2.0 / degrees_of_freedom))


# --------------------------------------------------------------------- one rate (absolute differences)

RATE_OFFSETS = np.linspace(0.0, 15.0, 1501)[1:]  # log offsets of the alternatives, beyond the candidate
RATE_OFFSETS.flags.writeable = False


def poisson_rate_bounds(
    events: float, exposure: float, log_threshold: float, dispersion: float = 1.0
) -> tuple[float, float]:
    """Anytime-valid lower and upper bounds, each at level 1 - exp(-log_threshold), of an event rate
    (events per unit of exposure) from the running totals of a Poisson process.

    For a candidate rate r the half-normal mixture (``RATE_PRIOR_SCALES``) over alternatives r e^u, u > 0
    (or r e^-u) of the Poisson likelihood ratios is a test martingale; the bound is where its evidence
    reaches the threshold. With no events the lower bound is 0 and the upper one about
    log(1/alpha) / exposure. ``dispersion`` > 1 (bursty events) widens both, as in the rate-ratio test.
    """
    if exposure <= 0:
        return 0.0, math.inf
    weights = _half_normal_mixture(RATE_OFFSETS)
    log_weights = np.log(weights * (RATE_OFFSETS[1] - RATE_OFFSETS[0]))

    def log_evidence(log_rate: float, upward: bool) -> float:
        scale = exposure * math.exp(log_rate)
        if upward:  # alternatives above: evidence that the rate exceeds exp(log_rate)
            log_ratio = events * RATE_OFFSETS - scale * np.expm1(RATE_OFFSETS)
        else:
            log_ratio = -events * RATE_OFFSETS - scale * np.expm1(-RATE_OFFSETS)
        terms = log_weights + log_ratio / dispersion
        top = float(terms.max())
        return top + math.log(float(np.sum(np.exp(terms - top))))

    centre = math.log(max(events, 0.5) / exposure)
    lower = 0.0
    if events > 0 and log_evidence(centre - 60.0, True) >= log_threshold:
        lower = math.exp(_bisect(lambda x: log_evidence(x, True) >= log_threshold, centre - 60.0, centre))
    upper = math.exp(_bisect(lambda x: log_evidence(x, False) < log_threshold, centre, centre + 60.0))
    return lower, upper


def _bisect(holds: Callable[[float], bool], low: float, high: float) -> float:
    """The boundary in [low, high] where ``holds`` (true at ``low``, monotone) turns false."""
    for _ in range(60):
        middle = 0.5 * (low + high)
        if holds(middle):
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def tolerance_band(direction: str, tolerance: float, log_scale: bool = True) -> Band:
    """Acceptable canary/baseline values: within ``tolerance`` on the bad side(s) of ``direction``.

    On the log scale (ratios) a 5% tolerance allows log(1.05) up and log(0.95) down; on the linear scale
    (relative differences, for metrics that can be zero or negative) it allows +-0.05.
    """
    if log_scale:
        high = math.log1p(tolerance)
        low = math.log1p(-tolerance) if tolerance < 1 else -math.inf
    else:
        high, low = tolerance, -tolerance
    if direction == "increase":
        return Band(None, high)
    if direction == "decrease":
        return Band(low, None)
    return Band(low, high)
