"""Seeded simulation benchmark: aicd's canary judge vs a Kayenta-style and a Flagger-style judge.

Run: ``python bench/judge.py [--quick] [--reps N] [--seed S] [--workers W]``. Prints one table row per
scenario and, last, one summary line; the same seed gives the same numbers. ``--scenario NAME``
(repeatable) runs aicd alone on the scenarios whose name contains NAME, on the same runs (a quick look
while tuning; the references need every null scenario for their matching). ``--quick`` runs 60 instead of
200 replications per scenario (about a minute on two cores; the figures are then only indicative).

Simulated world (per replication, 5 s scrapes, 1-min intervals, 20 looks, canary at 10% of traffic):

* traffic: 100 req/s split 10/90, with a load curve shared by both tracks (a sine -- a compressed diurnal
  cycle, 30-min period, +-25% -- times a slow AR(1) wander), Poisson requests per scrape;
* count metrics: per-request error probability grows with load and carries a pod-level AR(1) wander (sd
  10%; canary = 1 pod, baseline = mean of 9), so counts are mildly overdispersed; reported as Prometheus
  would, ``rate()`` over a 30 s window (errors/s and requests/s per track, the latter as the ``total``);
* latency metrics: the requests of each scrape (50 canary, 450 baseline) drawn from a lognormal whose
  median follows load and the serving pod's AR(1) wander (sd 5%; the canary is one pod, the baseline nine
  serving 50 requests each), with a 2% Pareto(1.5) tail; p50/p95/p99 per scrape, smoothed over the 30 s
  window (neighbouring points strongly autocorrelated), per track and, for the baseline, per pod too (as a
  query ``by (pod)`` reads them);
* gauges: CPU per pod follows load with pod-level AR(1) noise; memory wanders slowly per pod (baseline: the
  pods' mean, and each pod);
* 2% of scrapes are missed per track (the point is absent from every series of that track).

Scenarios. *Null* scenarios (nothing beyond tolerance: every failure is a false alarm): A/A with 1, 3, 5
and 10 metrics and on the sparse-error set; heavy tails (5% Pareto(1.1) tail); a diurnal swing (+-60%
load, 40-min period); a baseline that misses its first 3 minutes of scrapes; canary scrape gaps (two
2-minute gaps, 10% of scrapes missed); a warm-up (the canary 60% slower with 3x the errors at start,
fading over the first 2 minutes, which every judge is told to skip); low traffic (10 req/s: the canary
serves 1 req/s); a benign +3% latency offset (inside aicd's 5% tolerance); two canaries *at* the
tolerance -- latency +5% and errors x1.05 -- the hardest nulls aicd's error budget promises to handle;
and, since a quantile of the canary's fewer requests reads low (latency +5% measures p50 +3.9%), p50 and
p95 each alone with the canary scaled so that their *measured* ratio is exactly 1.05 (``MEASURED_EDGE``),
judged with all of alpha on that one metric. *Regression* scenarios (the change affects the canary from the start unless said): error rate
x1.5 and x2; sparse errors (0.01% -> the canary adds 3 errors/min); latency +10% and +25%; latency
variance x3 and bimodal latency (both with the same mean); a latency ramp (equal at start, +30% at the
end); error rate x2 on low traffic; latency +25% behind a warm-up; error rate x2 with a late baseline.
Regression scenarios judge three metrics (an error count, latency p50 and p95). All metrics are
"increase is bad" with aicd's default 5% tolerance. Each scenario's runs are seeded by its position in
``SCENARIOS`` (new ones are appended), and every judge sees the same runs.

Judges, each evaluated at every 1-min look on all data since the start:

* **aicd** -- :func:`aicd.judge.judge` with alpha = 0.01, canary weight 10, 1-min intervals, 20 planned
  intervals, every metric whose baseline has pods (latency, CPU, memory) judged per pod (``--aggregate``:
  none, as before per-pod judging; judged per pod, the measured-edge nulls put the canary at x1.05, its
  measured ratio against pods that serve as many requests), and :func:`aicd.judge.decide` for the step (duration 20 min, ``onInconclusive: pause``): a
  detection is a ``fail`` decision; at the end a run that did not fail ends ``pass`` (every metric shown
  within tolerance) or ``inconclusive`` (waits for a human).
* **Kayenta** (NetflixACAJudge as in spinnaker/kayenta): per metric, NaNs dropped and outliers removed
  (IQR factor 3), then the Mann-Whitney/Hodges-Lehmann confidence interval of the canary-baseline shift
  (normal approximation); the metric is High if the interval's lower end exceeds 0.25*|HL estimate|. Count
  metrics get the per-scrape error *ratio*. Score = 100 * passing / classified metrics; fail below the
  marginal score 75 at a look (one High metric of three).
* **Flagger** (fixed thresholds, no baseline): per metric, the canary's value for the interval (error
  ratio over the interval for counts, median of the interval's points for the rest) against a threshold;
  a detection after 2 consecutive failed checks of one metric.

Matched false-alarm rate: the references have no calibrated error budget (as specified -- 98% Kayenta,
thresholds at the 99th percentile of healthy canaries for Flagger -- they fail most unchanged canaries, see
the "raw" line). Each is therefore re-tuned *in-sample* so that it fails at most 1% of the runs of *every*
3-metric null scenario: Kayenta's confidence level (its classifier reduces to "High iff z_conf <= z*", so
the level is read off the nulls' peaks of z*) and one multiplier on Flagger's thresholds. This is done
twice: ``@m`` on the first benchmark's nulls (none closer to the tolerance than the +3% offset), ``@t`` on
all nulls including the two at the tolerance -- the null aicd is held to, so the fair comparison of
detection. Tuning on the very runs it is scored on gives the references knowledge of the noise level that
no real deployment has, so both matchings flatter them. Every judge skips the warm-up intervals a
scenario declares (Kayenta's ``beginCanaryAnalysisAfterMins``, Flagger's first checks).

Oracle: for each regression scenario, the share of runs that a test *knowing the noise level* flags at the
last look (per metric: the mean over the intervals of the canary-baseline difference of interval summaries
for continuous metrics, the conditional-binomial score at the tolerance edge for counts, standardised by its
sd over the runs of the same conditions' null scenario; flagged beyond z(alpha/m) from the edge). By
Neyman-Pearson no judge that keeps its false alarms within alpha/m per metric for a canary at the tolerance
flags more runs by the last look from those summaries: ``orc`` is that upper bound, ``orc1`` the same with
all of alpha on the single best metric (what an in-sample tuned reference can effectively spend).

The table: per scenario, aicd's flag rate (false-alarm rate on null scenarios, detection rate otherwise),
its median interval of detection and the shares of runs that ended pass / fail / inconclusive; the same
flag rate and delay for each reference under each matching; against the *best* matched reference of a
regression scenario (highest detection rate, ties to the earlier median), ``det`` is aicd's detection rate
divided by it and ``delay`` aicd's median interval of detection divided by it; then ``orc``/``orc1``. A
second table gives, per regression scenario, the share of runs detected by looks 5, 10, 15 and 20 for aicd
and the best reference @m (a judge that detects more runs late has a later median, so this tells earlier
from later where medians cannot).

Last line: ``fpr_max`` (aicd's largest false-alarm rate over all null scenarios), ``detection_min_ratio``
and ``delay_max_ratio`` (the worst ``det`` and ``delay`` ratios over regression scenarios against the @m
references, as in the first benchmark; detection rates floored at 1/reps), ``unsafe_pass_max`` (the
largest share of runs of a regression scenario that aicd ended with *pass*), and the same two ratios
against the @t references (``..._at_tolerance``), ``per_pod`` (1: aicd judged per pod, 0: ``--aggregate``)
and ``latency_plus10_detection`` (aicd's detection rate of latency +10%).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter
from scipy.stats import norm, trim_mean

from aicd.judge import (
    Action,
    AnalysisPolicy,
    Direction,
    JudgeConfig,
    Kind,
    MetricConfig,
    MetricOutcome,
    MetricSamples,
    Outcome,
    Series,
    decide,
    judge,
)

FloatArray = NDArray[np.float64]

SCRAPE_S = 5.0
INTERVAL_S = 60.0
LOOKS = 20
PER_INTERVAL = int(INTERVAL_S / SCRAPE_S)
POINTS = LOOKS * PER_INTERVAL + 1  # the last look also sees the point at its own timestamp
WINDOW = 6  # scrapes in the PromQL range window (30 s)
RAW = POINTS + WINDOW - 1  # raw scrapes, including the history the first window needs
CANARY_WEIGHT = 10.0
MISSED_SCRAPE_P = 0.02
BASELINE_PODS = 9
ALPHA = 0.01
CALIBRATION_REPS = 200
MATCHED_FPR = 0.01
FLAGGER_QUANTILE = 99.0
FLAGGER_CONSECUTIVE = 2
KAYENTA_CONFIDENCE = 0.98
KAYENTA_TOLERANCE = 0.25
KAYENTA_MARGINAL = 75.0
GAP_POINTS = 2 * PER_INTERVAL  # a canary scrape gap lasts two minutes
POLICY = AnalysisPolicy(duration_s=LOOKS * INTERVAL_S, interval_s=INTERVAL_S)


# ---------------------------------------------------------------------------------------------- world


@dataclass(frozen=True)
class Conditions:
    """The world a scenario runs in (both tracks), apart from what the canary release changes."""

    total_rps: float = 100.0
    load_swing: float = 0.25  # amplitude of the shared, sine-shaped load curve
    load_period_min: float = 30.0
    tail_share: float = 0.02  # share of requests with a Pareto tail
    tail_shape: float = 1.5
    missed_p: float = MISSED_SCRAPE_P
    baseline_late_intervals: int = 0  # the baseline has no points before this
    canary_gaps: int = 0  # two-minute gaps in the canary's points
    canary_missed_p: float = MISSED_SCRAPE_P
    warmup_intervals: int = 0  # the canary is slow and erratic at first; every judge skips this long


DEFAULT_CONDITIONS = Conditions()


def ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float, sd: float) -> FloatArray:
    """Stationary AR(1) noise along the last axis."""
    shocks = rng.standard_normal(shape) * sd * math.sqrt(1 - phi * phi)
    start = rng.standard_normal((*shape[:-1], 1)) * sd
    shocks[..., :1] = start
    result: FloatArray = lfilter([1.0], [1.0, -phi], shocks, axis=-1)
    return result


def window_mean(raw: FloatArray) -> FloatArray:
    """Trailing mean over WINDOW scrapes, as ``rate(x[30s])`` sees it; RAW -> POINTS values."""
    cumulative = np.cumsum(np.concatenate((np.zeros((*raw.shape[:-1], 1)), raw), axis=-1), axis=-1)
    result: FloatArray = (cumulative[..., WINDOW:] - cumulative[..., :-WINDOW]) / WINDOW
    return result


RAW_SECONDS = (np.arange(RAW) - (WINDOW - 1)) * SCRAPE_S  # time of each raw scrape since the analysis began


@dataclass
class World:
    rng: np.random.Generator
    conditions: Conditions
    load: FloatArray  # shared load factor per raw scrape
    canary_requests: FloatArray
    baseline_requests: FloatArray
    canary_missed: NDArray[np.bool_]
    baseline_missed: NDArray[np.bool_]
    warmup: FloatArray  # 1 at full warm-up fading to 0, per raw scrape


def make_world(rng: np.random.Generator, conditions: Conditions) -> World:
    minutes = np.arange(RAW) * SCRAPE_S / 60.0
    phase = rng.uniform(0, 2 * math.pi)
    load = (
        1 + conditions.load_swing * np.sin(2 * math.pi * minutes / conditions.load_period_min + phase)
    ) * np.exp(ar1(rng, (RAW,), 0.98, 0.10))
    share = CANARY_WEIGHT / 100.0
    canary_missed = rng.random(POINTS) < conditions.canary_missed_p
    for _ in range(conditions.canary_gaps):
        start = int(rng.integers(0, POINTS - GAP_POINTS))
        canary_missed[start : start + GAP_POINTS] = True
    baseline_missed = rng.random(POINTS) < conditions.missed_p
    baseline_missed[: conditions.baseline_late_intervals * PER_INTERVAL] = True
    warmup_s = conditions.warmup_intervals * INTERVAL_S
    warmup = np.clip(1.0 - RAW_SECONDS / warmup_s, 0.0, 1.0) if warmup_s > 0 else np.zeros(RAW)
    return World(
        rng=rng,
        conditions=conditions,
        load=load,
        canary_requests=rng.poisson(conditions.total_rps * share * SCRAPE_S * load).astype(np.float64),
        baseline_requests=rng.poisson(conditions.total_rps * (1 - share) * SCRAPE_S * load).astype(
            np.float64
        ),
        canary_missed=canary_missed,
        baseline_missed=baseline_missed,
        warmup=warmup,
    )


@dataclass
class SimMetric:
    config: MetricConfig
    canary: FloatArray  # one value per point (NaN: missed scrape)
    baseline: FloatArray
    canary_total: FloatArray | None = None
    baseline_total: FloatArray | None = None
    baseline_pods: FloatArray | None = (
        None  # the baseline's series per pod (pods x points), where it has pods
    )


# ------------------------------------------------------------------------------------ canary changes


@dataclass(frozen=True)
class Change:
    """What differs in the canary. Latency changes keep or scale the per-request distribution."""

    error_factor: float = 1.0
    extra_errors_per_minute: float = 0.0
    latency_factor: float = 1.0
    latency_ramp_to: float = 1.0  # latency factor reached at the end, growing linearly from 1
    latency_sigma: float | None = None  # new per-request log-sd, with the median moved to keep the mean
    bimodal: bool = False


NO_CHANGE = Change()
WARMUP_LATENCY = 0.6  # the canary's extra latency at the very start of a warm-up
WARMUP_ERRORS = 2.0  # and its extra error factor


def count_metric(
    world: World, name: str, error_probability: float, change: Change, is_target: bool, tolerance: float
) -> SimMetric:
    rng = world.rng
    base = error_probability * world.load
    # Pod-level wander: the canary is one pod, the baseline averages nine.
    canary_p = base * np.exp(ar1(rng, (RAW,), 0.9, 0.10)) * (change.error_factor if is_target else 1.0)
    canary_p = canary_p * (1.0 + WARMUP_ERRORS * world.warmup)
    baseline_p = base * np.exp(ar1(rng, (BASELINE_PODS, RAW), 0.9, 0.10)).mean(axis=0)
    extra = change.extra_errors_per_minute * SCRAPE_S / 60.0 if is_target else 0.0
    canary_errors = rng.poisson(np.clip(world.canary_requests * canary_p, 0, None) + extra).astype(np.float64)
    baseline_errors = rng.poisson(np.clip(world.baseline_requests * baseline_p, 0, None)).astype(np.float64)
    return SimMetric(
        MetricConfig(name, Kind.COUNT, Direction.INCREASE, tolerance=tolerance),
        canary=_missed(window_mean(canary_errors) / SCRAPE_S, world.canary_missed),
        baseline=_missed(window_mean(baseline_errors) / SCRAPE_S, world.baseline_missed),
        canary_total=_missed(window_mean(world.canary_requests) / SCRAPE_S, world.canary_missed),
        baseline_total=_missed(window_mean(world.baseline_requests) / SCRAPE_S, world.baseline_missed),
    )


def latency_group(
    world: World,
    prefix: str,
    median_ms: float,
    sigma: float,
    quantiles: Sequence[int],
    change: Change,
    tolerance: float,
) -> list[SimMetric]:
    """p-quantiles per scrape of one request-latency distribution, as histogram_quantile over 30 s."""
    rng = world.rng
    conditions = world.conditions
    share = CANARY_WEIGHT / 100.0
    sides: list[FloatArray] = []
    sizes = (
        (max(1, int(conditions.total_rps * share * SCRAPE_S)), 1, True),
        (max(1, int(conditions.total_rps * (1 - share) * SCRAPE_S)), BASELINE_PODS, False),
    )
    ramp = 1.0 + (change.latency_ramp_to - 1.0) * np.clip(RAW_SECONDS / (LOOKS * INTERVAL_S), 0.0, 1.0)
    pod_sides: list[FloatArray] = []
    for requests, pods, is_canary in sizes:
        # Pod-level wander of the median: the canary is one pod, the baseline nine, each request served
        # by one pod (request j by pod j mod pods, so each pod takes its share of the scrape's requests).
        pod_of_request = np.arange(requests) % pods
        pod_noise = ar1(rng, (pods, RAW), 0.9, 0.05)[pod_of_request].T  # RAW x requests
        log_median = (math.log(median_ms) + 0.3 * np.log(world.load))[:, np.newaxis] + pod_noise
        if is_canary:
            log_median = log_median + (np.log1p(WARMUP_LATENCY * world.warmup) + np.log(ramp))[:, np.newaxis]
        request_sigma = sigma
        if is_canary and change.latency_sigma is not None:
            # Same mean, wider spread: exp(mu + s^2/2) is held fixed.
            log_median = log_median + 0.5 * sigma**2 - 0.5 * change.latency_sigma**2
            request_sigma = change.latency_sigma
        latencies = np.exp(log_median + request_sigma * rng.standard_normal((RAW, requests)))
        tail = rng.random((RAW, requests)) < conditions.tail_share
        latencies[tail] *= 2.0 + rng.pareto(conditions.tail_shape, int(tail.sum()))
        if is_canary:
            latencies *= change.latency_factor
            if change.bimodal:
                slow = rng.random((RAW, requests)) < 0.10
                latencies *= np.where(slow, 1.9, 0.9)
        sides.append(_windowed_quantiles(latencies, quantiles))  # quantiles x POINTS
        if not is_canary:
            # pods x quantiles x POINTS: each pod's own histogram_quantile, as ``by (pod)`` reads it
            pod_sides.append(
                np.stack(
                    [
                        _windowed_quantiles(latencies[:, pod_of_request == pod], quantiles)
                        for pod in range(pods)
                    ]
                )
            )
    metrics = []
    for index, quantile in enumerate(quantiles):
        metrics.append(
            SimMetric(
                MetricConfig(
                    f"{prefix}-p{quantile}", Kind.CONTINUOUS, Direction.INCREASE, tolerance=tolerance
                ),
                canary=_missed(sides[0][index], world.canary_missed),
                baseline=_missed(sides[1][index], world.baseline_missed),
                baseline_pods=_missed(pod_sides[0][:, index], world.baseline_missed),
            )
        )
    return metrics


def _windowed_quantiles(latencies: FloatArray, quantiles: Sequence[int]) -> FloatArray:
    """Nearest-rank quantiles of each scrape's requests (RAW x requests), smoothed over the range window
    on the log scale: quantiles x POINTS."""
    requests = latencies.shape[1]
    ranks = [min(requests - 1, math.ceil(q / 100.0 * requests) - 1) for q in quantiles]
    per_scrape = np.partition(latencies, ranks, axis=1)[:, ranks]
    return np.exp(window_mean(np.log(per_scrape).T))


def gauge_metric(
    world: World, name: str, level: float, follows_load: bool, phi: float, sd: float, tolerance: float
) -> SimMetric:
    rng = world.rng
    pods = ar1(rng, (1 + BASELINE_PODS, RAW), phi, sd)  # pod 0 is the canary, the rest the baseline
    load = world.load if follows_load else np.ones(RAW)
    per_pod = level * load[np.newaxis, :] * np.exp(pods)
    return SimMetric(
        MetricConfig(name, Kind.CONTINUOUS, Direction.INCREASE, tolerance=tolerance),
        canary=_missed(window_mean(per_pod[0]), world.canary_missed),
        baseline=_missed(window_mean(per_pod[1:].mean(axis=0)), world.baseline_missed),
        baseline_pods=_missed(window_mean(per_pod[1:]), world.baseline_missed),
    )


def _missed(values: FloatArray, missed: NDArray[np.bool_]) -> FloatArray:
    result = values.copy()
    result[..., missed] = np.nan
    return result


COUNT_METRICS = {"errors-5xx": 0.01, "errors-timeout": 0.001, "errors-4xx": 0.03, "errors-sparse": 0.0001}
LATENCY_GROUPS = {"latency": (50.0, 0.5, (50, 95, 99)), "db-latency": (8.0, 0.8, (50, 95))}
GAUGES = {"cpu": (0.4, True, 0.95, 0.10), "memory": (512.0, False, 0.99, 0.03)}
TOLERANCE = MetricConfig("default", Kind.CONTINUOUS).tolerance  # aicd's default, 5%


def simulate(
    rng: np.random.Generator,
    names: Sequence[str],
    change: Change,
    target: str,
    conditions: Conditions = DEFAULT_CONDITIONS,
    tolerance: float = TOLERANCE,
) -> list[SimMetric]:
    """The named metrics of one replication; ``target`` (a metric or latency-group name) gets ``change``."""
    world = make_world(rng, conditions)
    produced: dict[str, SimMetric] = {}
    for name in names:
        if name in produced:
            continue
        if name in COUNT_METRICS:
            produced[name] = count_metric(world, name, COUNT_METRICS[name], change, name == target, tolerance)
            continue
        prefix = name.rsplit("-p", 1)[0]
        if prefix in LATENCY_GROUPS:
            median, sigma, quantiles = LATENCY_GROUPS[prefix]
            group_change = change if prefix == target else NO_CHANGE
            for metric in latency_group(world, prefix, median, sigma, quantiles, group_change, tolerance):
                produced[metric.config.name] = metric
            continue
        level, follows_load, phi, sd = GAUGES[name]
        produced[name] = gauge_metric(world, name, level, follows_load, phi, sd, tolerance)
    return [produced[name] for name in names]


# ----------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    metrics: tuple[str, ...]
    change: Change = NO_CHANGE
    target: str = ""
    conditions: Conditions = DEFAULT_CONDITIONS
    null: bool = False  # nothing beyond tolerance: every failure is a false alarm
    at_tolerance: bool = False  # a null exactly at the tolerance: the hardest null aicd promises to handle
    per_pod_change: Change | None = None  # the change instead when aicd judges per pod (see MEASURED_EDGE)

    @property
    def matched(self) -> bool:
        """Three-metric scenarios: the references are matched (and compared) on these."""
        return len(self.metrics) == 3


REGRESSION_SET = ("errors-5xx", "latency-p50", "latency-p95")
SPARSE_SET = ("errors-sparse", "latency-p50", "latency-p95")
TEN = (
    "errors-5xx",
    "errors-timeout",
    "errors-4xx",
    "latency-p50",
    "latency-p95",
    "latency-p99",
    "db-latency-p50",
    "db-latency-p95",
    "cpu",
    "memory",
)
# Latency factors that put the canary's measured p50 / p95 ratio (interval trimmed means of the log
# quantiles, as aicd summarises them) at 1 + TOLERANCE: a nearest-rank quantile over 50 requests per scrape
# reads 1.1% (p50) / 0.3% (p95) below one over 450, so "latency +5%" is not at the edge of either. Measured
# with 300 runs: ratios 1.0505 and 1.0509 (+-0.0009).
MEASURED_EDGE = {"latency-p50": 1.062, "latency-p95": 1.053}
# Judged per pod, the canary is compared with pods that serve as many requests as it does, so its measured
# ratio is the factor itself: 1.062 would be a real +6.2% regression there, and the edge is 1.05 exactly.
MEASURED_EDGE_PER_POD = 1.05
LOW_TRAFFIC = Conditions(total_rps=10.0)
WARMUP = Conditions(warmup_intervals=2)
BASELINE_LATE = Conditions(baseline_late_intervals=3)
SCENARIOS = (
    Scenario("A/A 1 metric", ("latency-p95",), null=True),
    Scenario("A/A 3 metrics", REGRESSION_SET, null=True),
    Scenario(
        "A/A 5 metrics", ("errors-5xx", "latency-p50", "latency-p95", "cpu", "errors-timeout"), null=True
    ),
    Scenario("A/A 10 metrics", TEN, null=True),
    Scenario("A/A sparse errors", SPARSE_SET, null=True),
    Scenario(
        "heavy tails", REGRESSION_SET, conditions=Conditions(tail_share=0.05, tail_shape=1.1), null=True
    ),
    Scenario(
        "diurnal swing",
        REGRESSION_SET,
        conditions=Conditions(load_swing=0.6, load_period_min=40.0),
        null=True,
    ),
    Scenario("baseline late 3 min", REGRESSION_SET, conditions=BASELINE_LATE, null=True),
    Scenario(
        "canary scrape gaps",
        REGRESSION_SET,
        conditions=Conditions(canary_gaps=2, canary_missed_p=0.10),
        null=True,
    ),
    Scenario("warm-up 2 min", REGRESSION_SET, conditions=WARMUP, null=True),
    Scenario("low traffic", REGRESSION_SET, conditions=LOW_TRAFFIC, null=True),
    Scenario("benign +3% latency", REGRESSION_SET, Change(latency_factor=1.03), "latency", null=True),
    Scenario("errors x1.5", REGRESSION_SET, Change(error_factor=1.5), "errors-5xx"),
    Scenario("errors x2", REGRESSION_SET, Change(error_factor=2.0), "errors-5xx"),
    Scenario("sparse errors 0->3/min", SPARSE_SET, Change(extra_errors_per_minute=3.0), "errors-sparse"),
    Scenario("latency +10%", REGRESSION_SET, Change(latency_factor=1.10), "latency"),
    Scenario("latency +25%", REGRESSION_SET, Change(latency_factor=1.25), "latency"),
    Scenario(
        "latency variance x3",
        REGRESSION_SET,
        Change(latency_sigma=math.sqrt(math.log(1 + 3 * math.expm1(0.25)))),
        "latency",
    ),
    Scenario("bimodal latency", REGRESSION_SET, Change(bimodal=True), "latency"),
    Scenario("latency ramp to +30%", REGRESSION_SET, Change(latency_ramp_to=1.3), "latency"),
    Scenario("low traffic errors x2", REGRESSION_SET, Change(error_factor=2.0), "errors-5xx", LOW_TRAFFIC),
    Scenario("warm-up, latency +25%", REGRESSION_SET, Change(latency_factor=1.25), "latency", WARMUP),
    Scenario(
        "baseline late, errors x2", REGRESSION_SET, Change(error_factor=2.0), "errors-5xx", BASELINE_LATE
    ),
    # Appended, so every scenario above keeps its index and therefore its runs (seeds).
    Scenario(
        "latency +5% (at tolerance)",
        REGRESSION_SET,
        Change(latency_factor=1.05),
        "latency",
        null=True,
        at_tolerance=True,
    ),
    Scenario(
        "errors x1.05 (at tolerance)",
        REGRESSION_SET,
        Change(error_factor=1.05),
        "errors-5xx",
        null=True,
        at_tolerance=True,
    ),
    # The canary scaled so that its *measured* ratio is exactly the tolerance (see MEASURED_EDGE), judged
    # as one metric with all of alpha: the exact edge where a false alarm would break aicd's promise.
    *(
        Scenario(
            f"{name.removeprefix('latency-')} at the measured edge",
            (name,),
            Change(latency_factor=factor),
            "latency",
            null=True,
            at_tolerance=True,
            per_pod_change=Change(latency_factor=MEASURED_EDGE_PER_POD),
        )
        for name, factor in MEASURED_EDGE.items()
    ),
)
ALL_METRICS = tuple(sorted({name for scenario in SCENARIOS for name in scenario.metrics}))


# ------------------------------------------------------------------------------------------- judges


def timestamps(points: int) -> FloatArray:
    return np.arange(points, dtype=np.float64) * SCRAPE_S


def as_series(values: FloatArray, upto: int) -> Series:
    present = ~np.isnan(values[:upto])
    return Series(tuple(timestamps(upto)[present].tolist()), tuple(values[:upto][present].tolist()))


def aicd_run(
    metrics: list[SimMetric], warmup_intervals: int, per_pod: bool = True
) -> tuple[int, Outcome, list[str]]:
    """aicd over one replication: the look of a fail decision (0: none), how the step ended, and the
    metrics that failed. With ``per_pod`` a metric whose baseline has pods is judged per pod."""

    def pods_of(metric: SimMetric) -> FloatArray | None:
        return metric.baseline_pods if per_pod else None

    config = JudgeConfig(
        metrics=tuple(
            replace(metric.config, per_pod=True) if pods_of(metric) is not None else metric.config
            for metric in metrics
        ),
        alpha=ALPHA,
        interval_s=INTERVAL_S,
        planned_intervals=LOOKS,
        warmup_intervals=warmup_intervals,
    )
    for look in range(1, LOOKS + 1):
        upto = look * PER_INTERVAL + 1
        samples = {
            metric.config.name: MetricSamples(
                as_series(metric.canary, upto),
                as_series(metric.baseline, upto),
                None if metric.canary_total is None else as_series(metric.canary_total, upto),
                None if metric.baseline_total is None else as_series(metric.baseline_total, upto),
                baseline_pods=_pod_series(pods_of(metric), upto),
            )
            for metric in metrics
        }
        decision = decide(judge(samples, config, canary_weight=CANARY_WEIGHT), POLICY, look * INTERVAL_S)
        if decision.action == Action.FAIL:
            failed = [m.name for m in decision.verdict.metrics if m.verdict == MetricOutcome.FAIL]
            return look, Outcome.FAIL, failed
        if decision.action != Action.CONTINUE:
            return 0, decision.verdict.outcome, []
    raise AssertionError("the decision must end the step at its duration")


def _pod_series(pods: FloatArray | None, upto: int) -> tuple[Series, ...]:
    return () if pods is None else tuple(as_series(pod, upto) for pod in pods)


def kayenta_values(metric: SimMetric, start: int, upto: int) -> tuple[FloatArray, FloatArray]:
    if metric.canary_total is None or metric.baseline_total is None:
        return metric.canary[start:upto], metric.baseline[start:upto]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (
            metric.canary[start:upto] / metric.canary_total[start:upto],
            metric.baseline[start:upto] / metric.baseline_total[start:upto],
        )


def iqr_filter(values: FloatArray) -> FloatArray:
    values = values[np.isfinite(values)]
    if values.size < 4:
        return values
    q1, q3 = np.percentile(values, [25, 75])
    spread = q3 - q1
    return values[(values >= q1 - 3 * spread) & (values <= q3 + 3 * spread)]


def kayenta_z(canary: FloatArray, baseline: FloatArray) -> float | None:
    """Kayenta's MannWhitneyClassifier for direction=increase, as the largest normal quantile z at which
    the metric is still High: with k = floor(nm/2 - z sd_U), High <=> D_(k) > 0.25|HL| <=>
    z <= z* = (nm/2 - #{D <= 0.25|HL|}) / sd_U (D: all canary-baseline differences). None: Nodata;
    -inf: Pass whatever the confidence (identical or constant data)."""
    canary, baseline = iqr_filter(canary), iqr_filter(baseline)
    if canary.size == 0 or baseline.size == 0:
        return None
    if (
        np.array_equal(np.sort(canary), np.sort(baseline))
        or np.unique(np.concatenate((canary, baseline))).size == 1
    ):
        return -math.inf
    n, m = canary.size, baseline.size
    differences = np.subtract.outer(canary, baseline).ravel()
    middle = differences.size // 2
    estimate = float(np.partition(differences, middle)[middle])  # Hodges-Lehmann shift
    at_or_below = int(np.count_nonzero(differences <= KAYENTA_TOLERANCE * abs(estimate)))
    return (n * m / 2 - at_or_below) / math.sqrt(n * m * (n + m + 1) / 12.0)


KAYENTA_Z = float(norm.ppf(0.5 + KAYENTA_CONFIDENCE / 2))


def kayenta_peak(z_values: list[float | None]) -> float:
    """The largest z* of a look over its classified metrics: with three metrics, one High metric brings
    the score (66.7) below Kayenta's marginal 75, so the look fails iff this is >= the z of its level."""
    return max((z for z in z_values if z is not None), default=-math.inf)


def flagger_value(metric: SimMetric, look: int) -> float:
    window = slice((look - 1) * PER_INTERVAL, look * PER_INTERVAL + 1)
    if metric.canary_total is not None:
        events = np.nansum(metric.canary[window])
        exposure = np.nansum(metric.canary_total[window])
        return float(events / exposure) if exposure > 0 else math.nan
    values = metric.canary[window]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def flagger_detection_look(
    values: dict[str, FloatArray], thresholds: dict[str, float], warmup_intervals: int
) -> int:
    """First look with FLAGGER_CONSECUTIVE consecutive failed checks of one metric (0: never)."""
    first = 0
    for name, series in values.items():
        over = np.nan_to_num(series, nan=-math.inf) > thresholds[name]
        over[:warmup_intervals] = False
        run = 0
        for look, failed in enumerate(over, start=1):
            run = run + 1 if failed else 0
            if run >= FLAGGER_CONSECUTIVE:
                first = look if first == 0 else min(first, look)
                break
    return first


def calibration_values(seed: int, first: int, count: int) -> dict[str, list[FloatArray]]:
    """Per-interval canary values of every metric in healthy (A/A) runs: Flagger's thresholds."""
    values: dict[str, list[FloatArray]] = {name: [] for name in ALL_METRICS}
    for rep in range(first, first + count):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 999_999, rep]))
        for metric in simulate(rng, ALL_METRICS, NO_CHANGE, ""):
            values[metric.config.name].append(
                np.array([flagger_value(metric, look) for look in range(1, LOOKS + 1)])
            )
    return values


# ------------------------------------------------------------------------------------------- oracle

ORACLE_TRIM = 0.2  # the interval summary aicd uses for levels: a 20%-trimmed mean of the log values


def oracle_statistic(metric: SimMetric, warmup_intervals: int) -> float:
    """What a judge that knows the noise level would test at the last look, per metric: continuous, the
    mean over the judged intervals of the canary-baseline difference of log levels (interval summaries as
    aicd's); counts, the conditional-binomial score of the canary's events against the tolerance edge
    (rate ratio 1 + tolerance), standardised by its binomial sd. NaN without paired data."""
    differences: list[float] = []
    canary_events = baseline_events = expected = variance = 0.0
    edge = 1.0 + TOLERANCE
    for interval in range(warmup_intervals, LOOKS):
        points = slice(interval * PER_INTERVAL, (interval + 1) * PER_INTERVAL)
        canary, baseline = metric.canary[points], metric.baseline[points]
        if metric.canary_total is None or metric.baseline_total is None:
            canary, baseline = canary[np.isfinite(canary)], baseline[np.isfinite(baseline)]
            if canary.size and baseline.size:
                differences.append(
                    float(trim_mean(np.log(canary), ORACLE_TRIM) - trim_mean(np.log(baseline), ORACLE_TRIM))
                )
            continue
        exposures = (np.nansum(metric.canary_total[points]), np.nansum(metric.baseline_total[points]))
        if min(exposures) <= 0:
            continue
        share = edge * exposures[0] / (edge * exposures[0] + exposures[1])
        events = (float(np.nansum(canary)) * SCRAPE_S, float(np.nansum(baseline)) * SCRAPE_S)
        total = events[0] + events[1]
        canary_events += events[0]
        baseline_events += events[1]
        expected += total * share
        variance += total * share * (1.0 - share)
    if metric.canary_total is None:
        return float(np.mean(differences)) if differences else math.nan
    return (canary_events - expected) / math.sqrt(variance) if variance > 0 else math.nan


def oracle_detection(
    runs: list[dict[str, float]], null_runs: list[dict[str, float]], metrics: Sequence[str]
) -> tuple[float, float]:
    """The share of runs a test that knows the noise level flags at the last look, and the same with all
    of alpha on the one metric that gains most from it.

    The noise level of each metric's statistic is its sd over the runs of the null scenario with the same
    conditions (in-sample, as the references are tuned); the test flags a metric whose statistic lies
    beyond the tolerance edge by z(alpha/m) of those sds. By Neyman-Pearson, no procedure whose false alarms
    stay within alpha/m per metric (within alpha) for a canary exactly at the tolerance can flag more runs
    by the last look from the same interval summaries: an upper bound, not a judge."""
    per_metric = ALPHA / len(metrics)
    flagged = np.zeros(len(runs), dtype=bool)
    best_single = 0.0
    for name in metrics:
        null = np.array([row[name] for row in null_runs])
        values = np.array([row[name] for row in runs])
        sd = float(np.nanstd(null, ddof=1))
        centre = 0.0 if name in COUNT_METRICS else math.log1p(TOLERANCE)
        standardised = np.nan_to_num((values - centre) / sd, nan=-math.inf)
        flagged |= standardised >= norm.isf(per_metric)
        best_single = max(best_single, float(np.mean(standardised >= norm.isf(ALPHA))))
    return float(np.mean(flagged)), best_single


# --------------------------------------------------------------------------------------------- runs


@dataclass
class RepResult:
    aicd: int  # look of detection, 0 = never
    aicd_outcome: Outcome
    aicd_failed: list[str]
    kayenta_z_by_look: list[float]  # Kayenta's peak z* per look (computed until it passes the stop z)
    flagger_values: dict[str, FloatArray] = field(default_factory=dict)
    oracle: dict[str, float] = field(default_factory=dict)  # per metric, see oracle_statistic


@dataclass(frozen=True)
class Task:
    scenario_index: int
    first: int
    count: int
    seed: int
    kayenta_stop_z: float | None  # stop computing Kayenta once its z* reaches this (None: every look)
    per_pod: bool = True  # aicd judges per pod the metrics whose baseline has pods


def run_rep(
    scenario: Scenario,
    scenario_index: int,
    rep: int,
    seed: int,
    kayenta_stop_z: float | None,
    per_pod: bool = True,
) -> RepResult:
    rng = np.random.default_rng(np.random.SeedSequence([seed, scenario_index, rep]))
    change = scenario.per_pod_change if per_pod and scenario.per_pod_change else scenario.change
    metrics = simulate(rng, scenario.metrics, change, scenario.target, scenario.conditions)
    warmup = scenario.conditions.warmup_intervals
    aicd, outcome, failed = aicd_run(metrics, warmup, per_pod)
    z_by_look: list[float] = []
    start = warmup * PER_INTERVAL
    for look in range(1, LOOKS + 1):
        if look <= warmup:
            z_by_look.append(-math.inf)
            continue
        upto = look * PER_INTERVAL + 1
        z_by_look.append(
            kayenta_peak([kayenta_z(*kayenta_values(metric, start, upto)) for metric in metrics])
        )
        if kayenta_stop_z is not None and z_by_look[-1] >= kayenta_stop_z:
            break
    flagger_values = {
        metric.config.name: np.array([flagger_value(metric, look) for look in range(1, LOOKS + 1)])
        for metric in metrics
    }
    oracle = {metric.config.name: oracle_statistic(metric, warmup) for metric in metrics}
    return RepResult(aicd, outcome, failed, z_by_look, flagger_values, oracle)


def run_task(task: Task) -> tuple[int, list[RepResult]]:
    scenario = SCENARIOS[task.scenario_index]
    results = [
        run_rep(scenario, task.scenario_index, rep, task.seed, task.kayenta_stop_z, task.per_pod)
        for rep in range(task.first, task.first + task.count)
    ]
    return task.scenario_index, results


def run_calibration(task: tuple[int, int, int]) -> dict[str, list[FloatArray]]:
    return calibration_values(*task)


@dataclass
class JudgeSummary:
    rate: float
    median_delay: float | None


def summarise(looks: Sequence[int]) -> JudgeSummary:
    detected = [look for look in looks if look > 0]
    return JudgeSummary(len(detected) / len(looks), statistics.median(detected) if detected else None)


def first_look_at_or_above(z_by_look: list[float], threshold: float) -> int:
    for look, z in enumerate(z_by_look, start=1):
        if z >= threshold:
            return look
    return 0


def matched_kayenta_z(null_runs: list[list[RepResult]], target_fpr: float) -> float:
    """The smallest z (confidence level) at which Kayenta fails at most target_fpr of every null's runs."""
    level = -math.inf
    for runs in null_runs:
        peaks = sorted((max(run.kayenta_z_by_look, default=-math.inf) for run in runs), reverse=True)
        allowed = math.floor(target_fpr * len(peaks))
        if allowed < len(peaks):
            level = max(level, float(np.nextafter(peaks[allowed], math.inf)))
    return level


def flagger_fpr(runs: list[RepResult], thresholds: dict[str, float], warmup_intervals: int) -> float:
    return sum(
        1 for run in runs if flagger_detection_look(run.flagger_values, thresholds, warmup_intervals)
    ) / len(runs)


def matched_flagger_factor(
    nulls: list[tuple[Scenario, list[RepResult]]], base: dict[str, float], target_fpr: float
) -> float:
    """The smallest multiplier of the p99 thresholds at which Flagger fails at most target_fpr of every
    null's runs (bisection: its false alarms only fall as the thresholds rise)."""

    def worst(factor: float) -> float:
        thresholds = {name: factor * value for name, value in base.items()}
        return max(flagger_fpr(runs, thresholds, s.conditions.warmup_intervals) for s, runs in nulls)

    low, high = 0.5, 1.0
    while worst(high) > target_fpr:
        low, high = high, high * 2.0
    for _ in range(30):
        middle = 0.5 * (low + high)
        if worst(middle) > target_fpr:
            low = middle
        else:
            high = middle
    return high


def run(reps: int, seed: int, workers: int, progress: Callable[[str], None], per_pod: bool = True) -> int:
    started = time.time()
    chunk = max(1, min(25, reps // 4 or 1))
    calibration_reps = min(CALIBRATION_REPS, max(60, reps))
    calibration_chunk = max(1, calibration_reps // max(1, workers))
    calibration_tasks = [
        (seed, first, min(calibration_chunk, calibration_reps - first))
        for first in range(0, calibration_reps, calibration_chunk)
    ]

    def tasks_for(indices: list[int], stop_z: float | None) -> list[Task]:
        return [
            Task(index, first, min(chunk, reps - first), seed, stop_z, per_pod)
            for index in indices
            for first in range(0, reps, chunk)
        ]

    results: dict[int, list[RepResult]] = {index: [] for index in range(len(SCENARIOS))}
    pooled: dict[str, list[FloatArray]] = {name: [] for name in ALL_METRICS}
    null_indices = [index for index, scenario in enumerate(SCENARIOS) if scenario.null]
    regression_indices = [index for index, scenario in enumerate(SCENARIOS) if not scenario.null]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        # Phase 1: Flagger's healthy-canary data and every null scenario (all of Kayenta's looks).
        for values in pool.map(run_calibration, calibration_tasks):
            for name, arrays in values.items():
                pooled[name].extend(arrays)
        for index, chunk_results in pool.map(run_task, tasks_for(null_indices, None)):
            results[index].extend(chunk_results)
        pooled_values = {name: np.concatenate(arrays) for name, arrays in pooled.items()}
        p99 = {
            name: float(np.nanpercentile(values, FLAGGER_QUANTILE)) for name, values in pooled_values.items()
        }
        # Two matchings: on the null scenarios of the first benchmark (none closer to the tolerance than a
        # +3% latency), and on all of them, with the canaries exactly at the tolerance too -- the null
        # aicd's error budget is for, so the fair one for comparing detection.
        matchings = {}
        for key, with_tolerance in (("m", False), ("t", True)):
            nulls = [
                (SCENARIOS[i], results[i])
                for i in null_indices
                if SCENARIOS[i].matched and (with_tolerance or not SCENARIOS[i].at_tolerance)
            ]
            factor = matched_flagger_factor(nulls, p99, MATCHED_FPR)
            matchings[key] = Matching(
                matched_kayenta_z([runs for _, runs in nulls], MATCHED_FPR),
                factor,
                {name: factor * value for name, value in p99.items()},
            )
        # Phase 2: the regression scenarios, Kayenta computed until it reaches its highest matched level.
        stop_z = max(matching.kayenta_z for matching in matchings.values())
        for index, chunk_results in pool.map(run_task, tasks_for(regression_indices, stop_z)):
            results[index].extend(chunk_results)

    progress(
        f"canary judge benchmark: {reps} runs/scenario, seed {seed}, {LOOKS} looks x {INTERVAL_S:.0f} s, "
        f"{SCRAPE_S:.0f} s scrapes, canary weight {CANARY_WEIGHT:.0f}%, aicd alpha {ALPHA}, tolerance {TOLERANCE:.0%}"
    )
    for key, label in (("m", "the first benchmark's nulls"), ("t", "every null, at the tolerance too")):
        matching = matchings[key]
        progress(
            f"references @{key} matched to <= {MATCHED_FPR:.0%} false alarms on {label} (3 metrics): Kayenta "
            f"confidence z {matching.kayenta_z:.2f} (as specified {KAYENTA_Z:.2f}, i.e. {KAYENTA_CONFIDENCE}), "
            f"Flagger thresholds {matching.flagger_factor:.2f} x the p{FLAGGER_QUANTILE:g} of healthy "
            "canaries (as specified 1.00); tuned in-sample on those nulls' runs"
        )
    progress(
        "flag = false-alarm rate (null) or detection rate; delay = median interval of detection; "
        "pass/fail/inc = how aicd's analysis ended; det, delay = aicd's detection and delay over the best "
        "matched reference's; orc = detection by the last look of a test that knows the noise level "
        "(alpha/m per metric; orc1: all of alpha on the best metric), an upper bound for any judge within "
        "its false-alarm budget at the tolerance"
    )
    header = (
        f"{'scenario':<27} {'m':>2} {'null':>4} | {'aicd':>5} {'delay':>5} {'pass':>5} {'fail':>5} {'inc':>5} | "
        f"{'kay@m':>5} {'delay':>5} {'flg@m':>5} {'delay':>5} {'det':>5} {'delay':>5} | "
        f"{'kay@t':>5} {'delay':>5} {'flg@t':>5} {'delay':>5} {'det':>5} {'delay':>5} | {'orc':>5} {'orc1':>5}"
    )
    progress(header)
    progress("-" * len(header))
    fprs: list[float] = []
    ratios: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key in matchings}
    unsafe_passes: list[float] = []
    raw_kayenta: list[float] = []
    raw_flagger: list[float] = []
    null_failures: dict[str, int] = {}
    by_look: list[str] = []
    latency_plus10 = math.nan  # aicd's detection rate in "latency +10%", the headline figure
    order = sorted(range(len(SCENARIOS)), key=lambda i: (not SCENARIOS[i].null, SCENARIOS[i].at_tolerance, i))
    for index in order:
        scenario = SCENARIOS[index]
        rows = results[index]
        warmup = scenario.conditions.warmup_intervals
        ours, ended = _aicd_summary(rows)
        if scenario.name == "latency +10%":
            latency_plus10 = ours.rate
        cells: list[str] = []
        best_by_key: dict[str, tuple[JudgeSummary, list[int]]] = {}
        for key, matching in matchings.items():
            if not scenario.matched:
                cells.append(f"{'-':>5} {'-':>5} {'-':>5} {'-':>5} {'-':>5} {'-':>5}")
                continue
            looks = {
                "Kayenta": [
                    first_look_at_or_above(row.kayenta_z_by_look, matching.kayenta_z) for row in rows
                ],
                "Flagger": [
                    flagger_detection_look(row.flagger_values, matching.flagger_thresholds, warmup)
                    for row in rows
                ],
            }
            kayenta, flagger = summarise(looks["Kayenta"]), summarise(looks["Flagger"])
            detection_cell = delay_cell = "-"
            if not scenario.null:
                best_name = max(looks, key=lambda n: _rank(summarise(looks[n])))
                best = summarise(looks[best_name])
                best_by_key[key] = (best, looks[best_name])
                ratio = ours.rate / max(best.rate, 1.0 / reps)
                ratios[key][0].append(ratio)
                detection_cell = f"{ratio:.2f}"
                if ours.median_delay is not None and best.median_delay is not None:
                    delay_ratio = ours.median_delay / best.median_delay
                    ratios[key][1].append(delay_ratio)
                    delay_cell = f"{delay_ratio:.2f}"
            cells.append(
                f"{_rate(kayenta):>5} {_delay(kayenta):>5} {_rate(flagger):>5} {_delay(flagger):>5} "
                f"{detection_cell:>5} {delay_cell:>5}"
            )
        oracle_cells = f"{'-':>5} {'-':>5}"
        if scenario.null:
            fprs.append(ours.rate)
            for row in rows:
                for name in row.aicd_failed:
                    null_failures[name] = null_failures.get(name, 0) + 1
            raw_kayenta.append(
                summarise([first_look_at_or_above(row.kayenta_z_by_look, KAYENTA_Z) for row in rows]).rate
            )
            raw_p99 = summarise([flagger_detection_look(row.flagger_values, p99, warmup) for row in rows])
            raw_flagger.append(raw_p99.rate)
        else:
            unsafe_passes.append(ended[Outcome.PASS])
            twin = _null_twin(scenario)
            if twin is not None:
                oracle, oracle_single = oracle_detection(
                    [row.oracle for row in rows], [row.oracle for row in results[twin]], scenario.metrics
                )
                oracle_cells = f"{oracle:>5.3f} {oracle_single:>5.3f}"
            if "m" in best_by_key:
                best, best_looks = best_by_key["m"]
                by_look.append(
                    f"{scenario.name:<27} | "
                    + " ".join(f"{_share_by([row.aicd for row in rows], look):>5.3f}" for look in BY_LOOKS)
                    + " | "
                    + " ".join(f"{_share_by(best_looks, look):>5.3f}" for look in BY_LOOKS)
                )
        progress(
            f"{scenario.name:<27} {len(scenario.metrics):>2} {'yes' if scenario.null else '':>4} | "
            f"{ours.rate:>5.3f} {_delay(ours):>5} {ended[Outcome.PASS]:>5.3f} {ended[Outcome.FAIL]:>5.3f} "
            f"{ended[Outcome.INCONCLUSIVE]:>5.3f} | {cells[0]} | {cells[1]} | {oracle_cells}"
        )
    attribution = ", ".join(f"{name} {count}" for name, count in sorted(null_failures.items())) or "none"
    progress(f"aicd's false alarms by metric (all null scenarios): {attribution}")
    progress(
        f"raw references (as specified) on the null scenarios: Kayenta false alarms {min(raw_kayenta):.3f}.."
        f"{max(raw_kayenta):.3f}, Flagger {min(raw_flagger):.3f}..{max(raw_flagger):.3f}"
    )
    looks_header = " ".join(f"{'@' + str(look):>5}" for look in BY_LOOKS)
    progress("share of runs detected by each look: aicd | the best reference @m")
    progress(f"{'scenario':<27} | {looks_header} | {looks_header}")
    for line in by_look:
        progress(line)
    progress(f"(ran in {time.time() - started:.0f} s)")
    print(
        f"fpr_max={max(fprs):.3f} detection_min_ratio={_worst(ratios['m'][0], min):.3f} "
        f"delay_max_ratio={_worst(ratios['m'][1], max):.3f} unsafe_pass_max={max(unsafe_passes):.3f} "
        f"detection_min_ratio_at_tolerance={_worst(ratios['t'][0], min):.3f} "
        f"delay_max_ratio_at_tolerance={_worst(ratios['t'][1], max):.3f} "
        f"per_pod={int(per_pod)} latency_plus10_detection={latency_plus10:.3f}"
    )
    return 0


BY_LOOKS = (5, 10, 15, 20)


@dataclass(frozen=True)
class Matching:
    """References tuned to the matched false-alarm rate on a set of null scenarios."""

    kayenta_z: float
    flagger_factor: float
    flagger_thresholds: dict[str, float]


def _rank(summary: JudgeSummary) -> tuple[float, float]:
    """Best reference: highest detection rate, ties to the earlier median."""
    return summary.rate, -(summary.median_delay or math.inf)


def _aicd_summary(rows: Sequence[RepResult]) -> tuple[JudgeSummary, dict[Outcome, float]]:
    """aicd's detection rate and median delay over a scenario's runs, and how its analyses ended."""
    ended = {
        outcome: sum(1 for row in rows if row.aicd_outcome == outcome) / len(rows) for outcome in Outcome
    }
    return summarise([row.aicd for row in rows]), ended


def _share_by(looks: Sequence[int], look: int) -> float:
    return sum(1 for value in looks if 0 < value <= look) / len(looks)


def _null_twin(scenario: Scenario) -> int | None:
    """The null scenario run in the same conditions on the same metrics (the oracle's noise level)."""
    for index, candidate in enumerate(SCENARIOS):
        if (
            candidate.null
            and not candidate.at_tolerance
            and candidate.change == NO_CHANGE
            and candidate.conditions == scenario.conditions
            and candidate.metrics == scenario.metrics
        ):
            return index
    return None


def _worst(values: list[float], pick: Callable[[list[float]], float]) -> float:
    return pick(values) if values else math.nan


def _delay(summary: JudgeSummary | None) -> str:
    return "-" if summary is None or summary.median_delay is None else f"{summary.median_delay:.1f}"


def _rate(summary: JudgeSummary | None) -> str:
    return "-" if summary is None else f"{summary.rate:.3f}"


def run_aicd_only(
    names: Sequence[str], reps: int, seed: int, workers: int, progress: Callable[[str], None], per_pod: bool
) -> int:
    """aicd's rows of the scenarios whose names contain one of ``names``, without the references (their
    matching needs every null scenario): a quick look while tuning, on the full benchmark's runs."""
    indices = [i for i, s in enumerate(SCENARIOS) if any(n.lower() in s.name.lower() for n in names)]
    if not indices:
        progress(f"no scenario matches {', '.join(names)}")
        return 2
    chunk = max(1, min(25, reps // 4 or 1))
    tasks = [  # Kayenta stops at its first look: its level is not matched here
        Task(index, first, min(chunk, reps - first), seed, -math.inf, per_pod)
        for index in indices
        for first in range(0, reps, chunk)
    ]
    results: dict[int, list[RepResult]] = {index: [] for index in indices}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for index, chunk_results in pool.map(run_task, tasks):
            results[index].extend(chunk_results)
    progress(f"aicd only: {reps} runs/scenario, seed {seed}, per_pod={int(per_pod)}")
    progress(f"{'scenario':<27} {'null':>4} | {'aicd':>5} {'delay':>5} {'pass':>5} {'fail':>5} {'inc':>5}")
    for index in indices:
        ours, ended = _aicd_summary(results[index])
        progress(
            f"{SCENARIOS[index].name:<27} {'yes' if SCENARIOS[index].null else '':>4} | {ours.rate:>5.3f} "
            f"{_delay(ours):>5} {ended[Outcome.PASS]:>5.3f} {ended[Outcome.FAIL]:>5.3f} "
            f"{ended[Outcome.INCONCLUSIVE]:>5.3f}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=None, help="replications per scenario (default 200)")
    parser.add_argument("--quick", action="store_true", help="60 replications per scenario")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--aggregate",
        action="store_true",
        help="aicd without the baseline's per-pod series (every metric judged on the aggregate, as before)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="only aicd, on the scenarios whose name contains NAME (repeatable; no references, no last line)",
    )
    arguments = parser.parse_args(argv)
    reps = arguments.reps if arguments.reps is not None else (60 if arguments.quick else 200)
    if arguments.scenario:
        return run_aicd_only(
            arguments.scenario,
            reps,
            arguments.seed,
            arguments.workers,
            lambda line: print(line, flush=True),
            per_pod=not arguments.aggregate,
        )
    return run(
        reps,
        arguments.seed,
        arguments.workers,
        lambda line: print(line, flush=True),
        per_pod=not arguments.aggregate,
    )


if __name__ == "__main__":
    sys.exit(main())
