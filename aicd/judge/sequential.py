"""Anytime-valid confidence bounds and the tests read off them.

The judge sees all data since the analysis began at every look and may stop at any look, so a
fixed-sample test (Kayenta's Mann-Whitney re-run on the growing window) inflates false alarms with every
look. Everything here is built from test martingales instead: for a candidate value ``v`` of the
parameter, ``E_t(v)`` is a nonnegative martingale with mean 1 when ``v`` is the truth, so by Ville's
inequality ``P(sup_t E_t(v_true) >= 1/alpha) <= alpha``. Mixing the likelihood ratio over alternatives
*above* ``v`` gives a lower confidence bound ``L_t = inf{v : E_t(v) < 1/alpha}`` that holds at all looks
at once with probability >= 1 - alpha (a confidence sequence; Howard et al. 2021, Lindon et al.,
KDD 2022); alternatives below give the upper bound.

A metric fails when the bound on its bad side lies beyond the tolerance band -- for "increase is bad",
when even the lower bound exceeds 1 + tolerance: were the truth inside the band, the bound would have
had to miss it, which happens with probability <= alpha. The reported e-value is ``E_t`` at the band's
edge; "e-value >= 1/alpha" and "bound beyond the band" are the same decision (both families below are
monotone in ``v``). A metric judged in both directions splits its alpha over the two sides.

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
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy.special import stdtr

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
    """Estimate, anytime-valid bounds and the test of a band for one parameter.

    ``ci_low``/``ci_high`` each hold at level 1 - exp(-log_threshold) (``None``: not bounded yet);
    ``log_e_value`` is the larger of the e-values at the band's edges.
    """

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    log_e_value: float
    log_threshold: float  # per side: log(1/alpha_i), plus log 2 when both sides are judged
    rejected: bool
    observations: int


def side_threshold(band: Band, log_threshold: float) -> float:
    """A band bounded on both sides splits the error budget over its two one-sided tests."""
    return log_threshold + (math.log(2.0) if band.sides == 2 else 0.0)


# ------------------------------------------------------------------------------ t-mixture (continuous)


def log_t_mixture(t: float, n: int) -> float:
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
def t_critical(n: int, log_threshold: float) -> float:
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
    observations: FloatArray, band: Band, log_threshold: float, autocorrelation: float = 0.0
) -> SequenceResult:
    """Bounds for the mean of Gaussian ``observations`` (unknown variance); test of ``band``.

    ``autocorrelation`` (lag 1, >= 0) deflates the number of observations to the AR(1) effective
    sample size n (1 - r) / (1 + r), widening the bounds for series whose intervals are not independent.
    """
    threshold = side_threshold(band, log_threshold)
    count = int(observations.size)
    if count == 0:
        return SequenceResult(None, None, None, 0.0, threshold, False, 0)
    mean = float(np.mean(observations))
    r = min(max(autocorrelation, 0.0), 0.95)
    n = math.floor(count * (1.0 - r) / (1.0 + r) + 1e-9) if r > 0 else count
    if n < 2:
        return SequenceResult(mean, None, None, 0.0, threshold, False, count)
    sd = float(np.std(observations, ddof=1))
    # Identical observations leave no noise estimate; a tiny floor keeps t finite.
    standard_error = max(sd, 1e-9 * max(1.0, abs(mean))) / math.sqrt(n)
    half_width = t_critical(n, threshold) * standard_error
    bounded = math.isfinite(half_width)
    evidence = []
    if band.high is not None:  # increases are bad: evidence that the mean is above the band
        evidence.append(log_t_mixture((mean - band.high) / standard_error, n))
    if band.low is not None:
        evidence.append(log_t_mixture((band.low - mean) / standard_error, n))
    log_e_value = max(evidence) if evidence else 0.0
    return SequenceResult(
        estimate=mean,
        ci_low=mean - half_width if bounded else None,
        ci_high=mean + half_width if bounded else None,
        log_e_value=log_e_value,
        log_threshold=threshold,
        rejected=log_e_value >= threshold,
        observations=count,
    )


def lag_one_autocorrelation(observations: FloatArray) -> float:
    """Lag-1 autocorrelation of a short series, shrunk by one standard error (1/sqrt(n)) and floored at 0.

    Interval summaries of most metrics are close to independent and their estimated autocorrelation is
    noise; the shrinkage keeps that noise from costing power, while slowly wandering metrics (memory, a
    single pod's drift) get their effective sample size cut. Below four observations: 0.
    """
    n = int(observations.size)
    if n < 4:
        return 0.0
    centred = observations - observations.mean()
    denominator = float(np.dot(centred, centred))
    if denominator <= 0:
        return 0.0
    estimate = float(np.dot(centred[:-1], centred[1:])) / denominator
    return max(0.0, estimate - 1.0 / math.sqrt(n))


# ------------------------------------------------------------------------------- rate ratio (counts)


def rate_ratio_sequence(
    canary_events: FloatArray,
    baseline_events: FloatArray,
    canary_share: FloatArray,
    band: Band,
    log_threshold: float,
) -> tuple[SequenceResult, float]:
    """Bounds for log(rho), the canary/baseline rate ratio, from per-interval event counts, the test of
    ``band``, and the dispersion factor used.

    ``canary_share`` is the canary's share of the exposure in each interval.
    """
    threshold = side_threshold(band, log_threshold)
    observations = int(canary_events.size)
    if float(np.sum(canary_events) + np.sum(baseline_events)) <= 0:
        return SequenceResult(None, None, None, 0.0, threshold, False, observations), 1.0
    likelihood = _GridLikelihood(canary_events, baseline_events, canary_share)
    evidence = []
    if band.high is not None:
        evidence.append(likelihood.log_evidence_above(band.high))
    if band.low is not None:
        evidence.append(likelihood.log_evidence_below(band.low))
    log_e_value = max(evidence) if evidence else 0.0
    result = SequenceResult(
        estimate=likelihood.estimate,
        ci_low=likelihood.lower_bound(threshold),
        ci_high=likelihood.upper_bound(threshold),
        log_e_value=log_e_value,
        log_threshold=threshold,
        rejected=log_e_value >= threshold,
        observations=observations,
    )
    return result, likelihood.dispersion


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
