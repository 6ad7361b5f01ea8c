"""Judging a metric per pod (aicd.judge.pods): the canary against the baseline's own pods, with fixed seeds.
The level at the tolerance edge at one look and over every look of a plan, the power on a real shift, and
the same through :func:`aicd.judge.judge` with per-pod series."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from aicd.judge import (
    JudgeConfig,
    Kind,
    MetricConfig,
    MetricOutcome,
    MetricSamples,
    Outcome,
    Series,
    TestName,
    judge,
)
from aicd.judge.evidence import MetricEvidence, to_test_result
from aicd.judge.explain import explain_metric
from aicd.judge.model import Statistic
from aicd.judge.pods import MIN_PODS, canary_noise_factor, pod_test
from aicd.judge.sequential import Band, SequenceResult
from aicd.judge.spending import planned_level

EDGE = math.log(1.05)
INCREASE = Band(None, EDGE)
PODS = 9
INTERVALS = 20


def _wandering_pods(
    rng: np.random.Generator, runs: int, shift: float, phi: float = 0.7, offset_sd: float = 0.0
) -> np.ndarray:
    """runs x (1 canary + PODS) x INTERVALS interval levels: a shared load curve plus each pod's own
    stationary AR(1) wander (sd 0.05) and a lasting offset (sd ``offset_sd``: a slower node, drawn for the
    canary's pod too), the canary (row 0) shifted by ``shift`` on the log scale."""
    shape = (runs, PODS + 1, INTERVALS)
    shocks = rng.standard_normal(shape) * 0.05 * math.sqrt(1 - phi * phi)
    shocks[..., 0] = rng.standard_normal(shape[:-1]) * 0.05
    wander = lfilter([1.0], [1.0, -phi], shocks, axis=-1)
    load = 0.3 * np.cumsum(rng.standard_normal((runs, 1, INTERVALS)) * 0.05, axis=-1)
    offsets = rng.standard_normal((runs, PODS + 1, 1)) * offset_sd
    levels: np.ndarray = wander + load + offsets
    levels[:, 0] += shift
    return levels


def test_pod_test_at_the_edge_rejects_its_level_whatever_the_wander() -> None:
    """A canary exactly at the tolerance edge, pods that wander slowly (interval lag-1 correlation 0.7,
    which the canary's own 20 intervals cannot tell from a shift): the t-test on the pods' spread rejects
    at most its level (0.01) of 4000 analyses -- and not vacuously less."""
    rng = np.random.default_rng(41)
    levels = _wandering_pods(rng, 4000, EDGE)
    rejected = sum(pod_test(run[0], run[1:], INCREASE, math.log(100.0)).rejected for run in levels)
    assert rejected / 4000 <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / 4000)
    assert rejected / 4000 >= 0.005


@pytest.mark.parametrize(("phi", "offset_sd"), [(0.97, 0.0), (0.7, 0.03)])
def test_pod_test_keeps_its_level_when_the_pods_own_noise_would_mislead(phi: float, offset_sd: float) -> None:
    """Where an estimate of the noise from each pod's intervals would be too low -- a wander slower than
    the analysis can show (interval lag-1 correlation 0.97) or pods that sit apart for good (a lasting
    offset as large as the wander) -- the pods' means still show the spread the canary's mean has, so the
    test at the edge rejects at most its level. (Pooling each interval's pod residuals as the noise, with
    an AR(1) correction for the correlation, rejected 14x and 8x the level in these two worlds, 3x with
    neither.)"""
    rng = np.random.default_rng(48)
    levels = _wandering_pods(rng, 4000, EDGE, phi=phi, offset_sd=offset_sd)
    rejected = sum(pod_test(run[0], run[1:], INCREASE, math.log(100.0)).rejected for run in levels)
    assert rejected / 4000 <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / 4000)
    assert rejected / 4000 >= 0.004


def test_pod_test_over_every_look_of_a_plan_keeps_its_budget() -> None:
    """The judge runs the test at each of 20 looks, its budget (0.01) spent over them as a group-sequential
    design: at the edge, the share of analyses rejected at *any* look stays within the budget."""
    rng = np.random.default_rng(42)
    budget = 0.01
    thresholds = [-math.log(planned_level(look, 1, INTERVALS + 1, 1.0, 0.1, budget)) for look in range(1, 21)]
    levels = _wandering_pods(rng, 2000, EDGE)
    rejected = 0
    for run in levels:
        for look, threshold in enumerate(thresholds, start=1):
            if pod_test(run[0, :look], run[1:, :look], INCREASE, threshold).rejected:
                rejected += 1
                break
    assert rejected / 2000 <= budget + 3 * math.sqrt(budget * (1 - budget) / 2000)


def test_pod_test_finds_a_shift_beyond_the_tolerance() -> None:
    """Canary +20% (tolerance 5%): found at level 0.01 in most analyses, with bounds that agree."""
    rng = np.random.default_rng(43)
    levels = _wandering_pods(rng, 300, math.log(1.20))
    results = [pod_test(run[0], run[1:], INCREASE, math.log(100.0)) for run in levels]
    assert sum(result.rejected for result in results) / 300 >= 0.8
    for result in results:
        assert result.ci_low is not None
        assert result.rejected == (result.ci_low > EDGE)


def test_pod_test_needs_enough_pods_and_widens_for_a_canary_with_less_traffic() -> None:
    canary = np.full(10, 0.5)
    assert not pod_test(canary, np.zeros((MIN_PODS - 1, 10)), INCREASE, math.log(100.0)).rejected
    assert canary_noise_factor(10.0, 9) == 1.0  # the canary serves one pod's share
    assert canary_noise_factor(5.0, 3) == pytest.approx(95.0 / 3 / 5.0)
    assert canary_noise_factor(None, 9) == 1.0
    rng = np.random.default_rng(44)
    pods = rng.normal(0.0, 0.05, (PODS, 10))
    narrow = pod_test(canary * 0.2, pods, INCREASE, math.log(100.0))
    wide = pod_test(canary * 0.2, pods, INCREASE, math.log(100.0), canary_noise=4.0)
    assert narrow.ci_low is not None and wide.ci_low is not None and wide.ci_low < narrow.ci_low


# --------------------------------------------------------------------------------------- the judge


STEP = 5.0


def _series(values: np.ndarray) -> Series:
    return Series.from_lists((np.arange(values.size) * STEP).tolist(), values.tolist())


def _samples(rng: np.random.Generator, factor: float, with_pods: bool = True) -> MetricSamples:
    """20 one-minute intervals of 5-s points: each pod's latency wanders (AR(1) per step), the baseline
    aggregate is the pods' mean, the canary one more pod times ``factor``."""
    steps = INTERVALS * 12
    shocks = rng.standard_normal((PODS + 1, steps)) * 0.05 * math.sqrt(1 - 0.9**2)
    shocks[:, 0] = rng.standard_normal(PODS + 1) * 0.05
    pods = 100.0 * np.exp(
        lfilter([1.0], [1.0, -0.9], shocks, axis=-1) + 0.01 * rng.standard_normal((PODS + 1, steps))
    )
    return MetricSamples(
        canary=_series(pods[0] * factor),
        baseline=_series(pods[1:].mean(axis=0)),
        baseline_pods=tuple(_series(pod) for pod in pods[1:]) if with_pods else (),
    )


CONFIG = JudgeConfig(
    metrics=(MetricConfig("latency", Kind.CONTINUOUS, per_pod=True),), interval_s=60.0, planned_intervals=20
)


def test_judge_fails_a_slower_canary_on_the_pods_test() -> None:
    verdict = judge({"latency": _samples(np.random.default_rng(45), 1.30)}, CONFIG, canary_weight=10.0)
    assert verdict.outcome == Outcome.FAIL
    metric = verdict.metric("latency")
    pods = next(test for test in metric.tests if test.name == TestName.PODS)
    assert pods.rejected and pods.estimate is not None and pods.estimate > 1.2
    assert "against 9 baseline pods over 20 intervals" in metric.detail


def test_judge_per_pod_without_pod_series_judges_on_the_aggregate_alone() -> None:
    samples = _samples(np.random.default_rng(46), 1.0, with_pods=False)
    metric = judge({"latency": samples}, CONFIG, canary_weight=10.0).metric("latency")
    pods = next(test for test in metric.tests if test.name == TestName.PODS)
    assert not pods.rejected and pods.estimate is None
    assert metric.verdict != MetricOutcome.FAIL


def test_per_pod_is_for_continuous_metrics_and_pod_series_survive_the_payload() -> None:
    with pytest.raises(ValueError, match="per-pod judging applies to continuous metrics only"):
        MetricConfig("errors", Kind.COUNT, per_pod=True)
    samples = _samples(np.random.default_rng(47), 1.0)
    assert MetricSamples.from_dict(samples.to_dict()) == samples
    assert MetricSamples.from_dict({"canary": {}, "baseline": {}}).baseline_pods == ()


def test_a_failure_shown_by_the_pods_alone_says_so_in_plain_words() -> None:
    metric = CONFIG.metrics[0]
    location = SequenceResult(math.log(1.12), math.log(1.01), math.log(1.25), 2.0, 6.0, False, 20)
    pods = SequenceResult(math.log(1.12), math.log(1.07), math.log(1.17), 8.0, 6.0, True, 20)
    evidence = MetricEvidence(
        tests=(
            to_test_result(TestName.LOCATION, location, INCREASE),
            to_test_result(TestName.PODS, pods, INCREASE, statistic=Statistic.P_VALUE),
        ),
        canary_samples=240,
        baseline_samples=240,
        intervals=20,
        no_data_share=0.0,
        testable=True,
        shown_safe=False,
        regression=True,
    )
    text = explain_metric(metric, MetricOutcome.FAIL, evidence, (), None, CONFIG, 60.0)
    assert text.startswith("latency on the canary is 12% higher than on the baseline's typical pod")
    assert "at least +7.0%" in text and "tolerance +5%" in text, text
