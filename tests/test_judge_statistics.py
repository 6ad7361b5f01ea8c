"""The judge's statistical building blocks (aicd.judge.sequential), each against its promise, with fixed
seeds: coverage of the per-track rate bounds, the level of the recent-window test under null patterns that
are not flat, the autocorrelation estimates, and the "what would settle it" factor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from aicd.judge.sequential import (
    Band,
    estimated_interval_correlation,
    interval_correlation,
    lag_one_autocorrelation,
    lagged_autocorrelation,
    poisson_rate_bounds,
    rate_ratio_test,
    settle_factor,
    t_mixture_sequence,
    t_test,
)
from aicd.judge.spending import group_sequential_levels, look_share, planned_level

EDGE = math.log(1.05)
INCREASE = Band(None, EDGE)


def test_rate_bounds_with_no_events_match_the_textbook_and_shrink_with_exposure() -> None:
    low, high = poisson_rate_bounds(0.0, 1000.0, math.log(100.0))
    assert low == 0.0
    # The exact one-sided Poisson bound is log(1/alpha)/exposure; the mixture costs a little more.
    assert math.log(100.0) / 1000.0 < high < 2.0 * math.log(100.0) / 1000.0
    assert poisson_rate_bounds(0.0, 10_000.0, math.log(100.0))[1] < high / 5


def test_rate_bounds_cover_the_true_rate_at_every_look() -> None:
    """300 Poisson processes watched over 30 looks: the bounds at level 1 - 0.1 miss the true rate at any
    look in at most 10% of them (anytime coverage, not just at the end)."""
    rng = np.random.default_rng(7)
    rate, misses = 0.02, 0
    for _ in range(300):
        events = rng.poisson(rate * 200.0, 30).cumsum()
        exposure = 200.0 * np.arange(1, 31)
        for k in range(30):
            low, high = poisson_rate_bounds(float(events[k]), float(exposure[k]), math.log(10.0))
            if not low <= rate <= high:
                misses += 1
                break
    assert misses / 300 <= 0.1 * 2  # each side at 0.1: together at most 0.2
    assert misses > 0  # not vacuously wide


def test_recent_window_test_keeps_its_level_when_the_null_is_not_flat() -> None:
    """Means that rise from -10% to the band's edge, then sit there: the window's average is inside the
    band, so the one-sided test may reject at most alpha of the time, even though a straight line fitted to
    the window would point beyond it."""
    rng = np.random.default_rng(8)
    alpha, rejections, trials = 0.05, 0, 4000
    means = np.concatenate([np.linspace(math.log(0.9), EDGE, 5), np.full(5, EDGE)])
    for _ in range(trials):
        observations = means + rng.normal(0.0, 0.05, means.size)
        rejections += t_test(observations, INCREASE, math.log(1 / alpha)).rejected
    assert rejections / trials <= alpha * 1.15  # sampling slack: sd of the rate is ~0.0034


def test_recent_window_test_sees_a_ramp_the_sample_variance_would_hide() -> None:
    rng = np.random.default_rng(9)
    ramp = np.linspace(math.log(1.02), math.log(1.4), 10) + rng.normal(0.0, 0.03, 10)
    detrended = t_test(ramp, INCREASE, math.log(1 / 1e-4))
    assert detrended.rejected and detrended.ci_low is not None and detrended.ci_low > EDGE
    # The plain t statistic with the sample variance (inflated by the ramp) would not reject.
    mean, sd = float(ramp.mean()), float(ramp.std(ddof=1))
    from scipy.stats import t

    assert (mean - EDGE) / (sd / math.sqrt(ramp.size)) < t.isf(1e-4, ramp.size - 1)


def test_autocorrelation_estimates_tell_a_wandering_series_from_white_noise() -> None:
    rng = np.random.default_rng(10)
    white = rng.normal(size=600)
    wander = np.empty(600)
    wander[0] = 0.0
    for index in range(1, 600):
        wander[index] = 0.95 * wander[index - 1] + rng.normal()
    assert lagged_autocorrelation(white, 12) == 0.0
    assert lagged_autocorrelation(wander, 12) > 0.3  # 0.95**12 = 0.54, shrunk by one standard error
    assert lag_one_autocorrelation(white[::12][:20]) < 0.2
    # A straight trend is not autocorrelation: it is removed before estimating from eight points on.
    assert lag_one_autocorrelation(np.linspace(0.0, 1.0, 12) + rng.normal(0, 0.01, 12)) < 0.3


def test_t_mixture_gives_separate_fail_and_pass_bounds() -> None:
    rng = np.random.default_rng(11)
    observations = rng.normal(0.01, 0.01, 20)
    result = t_mixture_sequence(observations, INCREASE, math.log(300.0), math.log(100.0))
    assert result.ci_low is not None and result.safe_high is not None and result.ci_high is not None
    assert result.ci_high > result.safe_high  # the pass side, at alpha, is narrower than the fail side
    assert result.within and not result.rejected  # +1% +- 0.2%: shown inside +5%


def test_settle_factor_estimates_how_much_more_data_would_decide() -> None:
    observations = np.random.default_rng(12).normal(0.0, 0.05, 10)
    result = t_mixture_sequence(observations, INCREASE, math.log(300.0), math.log(100.0))
    factor = settle_factor(result, INCREASE)
    assert factor is not None and factor > 1.0
    assert result.estimate is not None and result.safe_high is not None
    # With factor times the data, the bound (shrinking like 1/sqrt(n)) would reach the edge.
    assert math.isclose(
        result.estimate + (result.safe_high - result.estimate) / math.sqrt(factor), EDGE, rel_tol=1e-9
    )


# ---------------------------------------------------------------------------- spending over planned looks


def test_look_shares_spend_the_budget_over_the_plan_and_a_tail_for_longer_analyses() -> None:
    planned = [look_share(look, 1, 21, 1.0, 0.1) for look in range(1, 22)]
    assert math.isclose(sum(planned), 0.9, rel_tol=1e-12)
    assert planned == sorted(planned)  # power 1: more of the budget where there is more data
    tail = sum(look_share(look, 1, 21, 1.0, 0.1) for look in range(22, 200_000))
    assert 0.0999 < tail <= 0.1  # looks after the plan (a paused analysis) share the rest, never more
    assert look_share(7, 8, 21, 0.0, 0.0) == 0.0  # before its first look a test does not run
    assert look_share(30, 8, 21, 0.0, 0.0) == 0.0  # no tail: nothing after the plan
    assert look_share(5, 1, None, 1.0, 0.1) == 1.0  # without a plan the look is the only one


def test_group_sequential_levels_match_the_textbook() -> None:
    """Lan-DeMets O'Brien-Fleming-type spending, one-sided 0.025, five equally spaced looks: the
    critical values of Jennison & Turnbull (table 2.3 family) 4.877, 3.357, 2.680, 2.290, 2.031."""
    spent = [2.0 * float(norm.sf(norm.isf(0.0125) / math.sqrt(k / 5.0))) for k in range(1, 6)]
    critical = [float(norm.isf(level)) for level in group_sequential_levels([1, 2, 3, 4, 5], spent)]
    assert critical == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=2e-3)


def test_group_sequential_levels_keep_the_budget_over_correlated_looks_and_beat_the_union_bound() -> None:
    """Brownian paths over 20 looks: the share of paths that ever cross the levels is the budget (0.0025),
    and the last look's level is well above its Bonferroni spend (what the planned-look test gains)."""
    looks, budget = 20, 0.0025
    spent = [budget * k / looks for k in range(1, looks + 1)]
    levels = np.array(group_sequential_levels([float(k) for k in range(1, looks + 1)], spent))
    rng = np.random.default_rng(31)
    crossed = 0
    for _ in range(4):
        paths = np.cumsum(rng.standard_normal((250_000, looks)), axis=1) / np.sqrt(np.arange(1, looks + 1))
        crossed += int(np.count_nonzero((paths >= norm.isf(levels)).any(axis=1)))
    assert abs(crossed / 1_000_000 - budget) < 0.0003  # binomial sd 0.00005
    assert levels[-1] > 3 * budget / looks
    # Information that does not grow spends nothing new.
    repeated = group_sequential_levels([1.0, 1.0, 2.0], [0.001, 0.002, 0.003])
    assert repeated[0] == repeated[1]


def test_planned_level_spends_more_than_its_share_at_the_end_and_all_of_it_without_a_plan() -> None:
    alpha = 0.01
    assert planned_level(5, 1, None, 1.0, 0.1, alpha) == alpha
    assert planned_level(3, 6, 21, 1.0, 0.1, alpha) == 0.0
    last = planned_level(20, 1, 21, 1.0, 0.1, alpha)
    assert last > alpha * look_share(20, 1, 21, 1.0, 0.1)
    assert last < alpha


# ------------------------------------------------------------------------------ fixed-sample tests


def _binomial_intervals(
    rng: np.random.Generator, ratio: float, intervals: int, totals: float, share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    exposure_share = np.full(intervals, share)
    probability = ratio * share / (ratio * share + 1 - share)
    events = rng.poisson(totals, intervals).astype(np.float64)
    canary = rng.binomial(events.astype(np.int64), probability).astype(np.float64)
    return canary, events - canary, exposure_share


def test_rate_ratio_test_keeps_its_level_at_the_edge_even_with_few_events() -> None:
    """Canary exactly at the tolerance edge (rate ratio 1.05), a 10% canary: the likelihood-ratio test at
    level 0.05 rejects at most ~5% of 3000 analyses, with 150 events per analysis or with only 15."""
    rng = np.random.default_rng(32)
    for totals in (7.5, 0.75):
        rejected = 0
        for _ in range(3000):
            canary, baseline, share = _binomial_intervals(rng, 1.05, 20, totals, 0.1)
            result, _ = rate_ratio_test(canary, baseline, share, INCREASE, math.log(1 / 0.05))
            rejected += result.rejected
        assert 0.02 < rejected / 3000 <= 0.05 * 1.2  # sd of the rate 0.004: valid, and not vacuous


def test_rate_ratio_test_finds_a_doubling_and_its_bounds_agree_with_its_decision() -> None:
    rng = np.random.default_rng(33)
    caught = 0
    for _ in range(200):
        canary, baseline, share = _binomial_intervals(rng, 2.0, 20, 30.0, 0.1)
        result, dispersion = rate_ratio_test(canary, baseline, share, INCREASE, math.log(1 / 0.001))
        assert dispersion >= 1.0
        assert result.ci_low is not None and result.estimate is not None
        assert result.rejected == (result.ci_low > EDGE)  # the bound and the p-value decide alike
        assert result.ci_low < result.estimate < (result.ci_high or math.inf)
        caught += result.rejected
    assert caught >= 190  # ~600 events, 2x: about 6 sds beyond the edge


def test_t_test_with_the_interval_correlation_keeps_its_level_on_wandering_intervals() -> None:
    """AR(1) interval means (r = 0.4) exactly at the edge: told the correlation, the t-test rejects at most
    about its level; treating the intervals as independent would reject several times as often."""
    rng = np.random.default_rng(34)
    told = naive = 0
    trials, level = 4000, 0.01
    for _ in range(trials):
        noise = np.empty(20)
        noise[0] = rng.normal()
        for index in range(1, 20):
            noise[index] = 0.4 * noise[index - 1] + math.sqrt(1 - 0.16) * rng.normal()
        observations = EDGE + 0.05 * noise
        told += t_test(observations, INCREASE, math.log(1 / level), autocorrelation=0.4).rejected
        naive += t_test(observations, INCREASE, math.log(1 / level)).rejected
    assert told / trials <= level * 1.3
    assert naive / trials > 2.5 * level


def test_interval_correlation_reads_a_slow_wander_from_the_query_steps() -> None:
    """Steps of an AR(1) with phi 0.9 (a canary pod's wander, 12 steps per interval, 5% missed): the means
    of consecutive intervals correlate at 0.47. From 10 and from 20 intervals the bias-corrected step-level
    estimate is right on average (uncorrected it read 0.16 and 0.31: the fitted line takes the rest); the
    interval summaries' own lag-1 estimate sees little; white noise gives little (floored at 0, so a bit)."""
    phi, b = 0.9, 12
    within = np.mean([phi ** abs(i - j) for i in range(b) for j in range(b)])
    across = np.mean([phi ** (j + b - i) for i in range(b) for j in range(b)])
    truth = across / within
    assert 0.45 < truth < 0.5
    for intervals in (10, 20):
        rng = np.random.default_rng(35)
        estimates, from_summaries, white = [], [], []
        for _ in range(200):
            steps = np.empty(intervals * b)
            steps[0] = rng.normal()
            for index in range(1, steps.size):
                steps[index] = phi * steps[index - 1] + math.sqrt(1 - phi * phi) * rng.normal()
            from_summaries.append(lag_one_autocorrelation(steps.reshape(intervals, b).mean(axis=1)))
            steps[rng.random(steps.size) < 0.05] = np.nan  # missed scrapes
            estimates.append(estimated_interval_correlation(steps, b) or 0.0)
            white.append(estimated_interval_correlation(rng.normal(size=steps.size), b) or 0.0)
        assert abs(float(np.mean(estimates)) - truth) < 0.08
        assert float(np.mean(estimates)) > float(np.mean(from_summaries)) + 0.15
        assert float(np.mean(white)) < 0.15


def test_interval_correlation_is_the_prior_until_the_data_can_speak_then_moves_towards_the_estimate() -> None:
    """Before eight intervals the series cannot tell 0 from 0.7, so the stated prior stands whatever the
    data; from then on the estimate gains weight with every interval, so white noise pulls a prior of 0.6
    down gradually (not at once) and a strong wander pulls a prior of 0 up."""
    b, rng = 12, np.random.default_rng(36)
    white = rng.normal(size=60 * b)
    for prior in (0.0, 0.3, 0.6):
        assert interval_correlation(white[: 7 * b], b, prior) == prior
    readings = [
        float(np.mean([interval_correlation(rng.normal(size=k * b), b, 0.6) for _ in range(50)]))
        for k in (8, 20, 60)
    ]
    assert 0.45 < readings[0] < 0.6 and readings[0] > readings[1] > readings[2] and readings[2] < 0.3
    wander = np.empty(60 * b)
    wander[0] = rng.normal()
    for index in range(1, wander.size):
        wander[index] = 0.97 * wander[index - 1] + math.sqrt(1 - 0.97**2) * rng.normal()
    assert interval_correlation(wander, b, 0.0) > 0.3


def test_t_mixture_told_of_correlated_intervals_keeps_its_level_at_every_look() -> None:
    """AR(1) interval differences (r = 0.36, bench/judge.py's p50) exactly at the edge, looked at after
    every interval from the third to the twentieth: told the correlation, the sequence fails at most about
    its level; told 0 (what a short series reads) it fails several times as often."""
    rng = np.random.default_rng(37)
    told = naive = 0
    trials, level, r = 3000, 0.01, 0.36
    for _ in range(trials):
        noise = np.empty(20)
        noise[0] = rng.normal()
        for index in range(1, 20):
            noise[index] = r * noise[index - 1] + math.sqrt(1 - r * r) * rng.normal()
        observations = EDGE + 0.05 * noise
        looks = range(3, 21)
        told += any(
            t_mixture_sequence(observations[:k], INCREASE, math.log(1 / level), autocorrelation=r).rejected
            for k in looks
        )
        naive += any(
            t_mixture_sequence(observations[:k], INCREASE, math.log(1 / level)).rejected for k in looks
        )
    assert told / trials <= level
    assert naive / trials > 2 * told / trials
