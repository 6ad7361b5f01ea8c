"""Unit tests of the canary judge (aicd.judge): verdicts, edge cases and anytime validity.

Series are simulated with seeded numpy generators the way the analysis activity fetches them: five points
per 60-s interval (a 12-s query step) and one more point at each look's own timestamp.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aicd.judge import (
    ERROR,
    FAIL,
    INCONCLUSIVE,
    NODATA,
    PASS,
    RUNNING,
    AnalysisVerdict,
    JudgeConfig,
    MetricConfig,
    MetricSamples,
    Series,
    judge,
    render_table,
)

STEP = 12.0
INTERVAL = 60.0
POINTS_PER_INTERVAL = int(INTERVAL / STEP)


def times(intervals: int) -> np.ndarray:
    return np.arange(intervals * POINTS_PER_INTERVAL + 1) * STEP


def series(values: np.ndarray, stamps: np.ndarray | None = None) -> Series:
    stamps = times(0)[:0] if stamps is None and values.size == 0 else stamps
    if stamps is None:
        stamps = np.arange(values.size) * STEP
    return Series(tuple(float(t) for t in stamps), tuple(float(v) for v in values))


def ar1(rng: np.random.Generator, size: int, phi: float = 0.6, sd: float = 0.1) -> np.ndarray:
    noise = np.empty(size)
    noise[0] = rng.normal(0, sd)
    shocks = rng.normal(0, sd * math.sqrt(1 - phi * phi), size)
    for index in range(1, size):
        noise[index] = phi * noise[index - 1] + shocks[index]
    return noise


def load_curve(size: int) -> np.ndarray:
    """Drift shared by both tracks (a diurnal-like swing): pairing must cancel it."""
    return 1.0 + 0.3 * np.sin(2 * math.pi * np.arange(size) * STEP / 1200.0)


def continuous_samples(
    rng: np.random.Generator, intervals: int, factor: float = 1.0, level: float = 100.0, sd: float = 0.1
) -> MetricSamples:
    size = intervals * POINTS_PER_INTERVAL + 1
    load = load_curve(size)
    canary = level * factor * load * np.exp(ar1(rng, size, sd=sd))
    baseline = level * load * np.exp(ar1(rng, size, sd=sd))
    return MetricSamples(series(canary), series(baseline))


def count_samples(
    rng: np.random.Generator,
    intervals: int,
    error_ratio: float = 0.01,
    factor: float = 1.0,
    requests_per_s: float = 100.0,
    canary_share: float = 0.1,
    with_totals: bool = True,
) -> MetricSamples:
    """Error rates (errors/s per query step) and request rates of both tracks."""
    size = intervals * POINTS_PER_INTERVAL + 1
    load = load_curve(size)
    canary_requests = requests_per_s * canary_share * load
    baseline_requests = requests_per_s * (1 - canary_share) * load
    canary_errors = rng.poisson(canary_requests * STEP * error_ratio * factor) / STEP
    baseline_errors = rng.poisson(baseline_requests * STEP * error_ratio) / STEP
    return MetricSamples(
        series(canary_errors),
        series(baseline_errors),
        series(canary_requests) if with_totals else None,
        series(baseline_requests) if with_totals else None,
    )


def run(
    metrics: list[MetricConfig],
    samples: dict[str, MetricSamples],
    *,
    final: bool = True,
    config: JudgeConfig | None = None,
    canary_weight: float | None = 10.0,
) -> AnalysisVerdict:
    return judge(
        metrics,
        samples,
        config or JudgeConfig(),
        final=final,
        canary_weight=canary_weight,
        interval_seconds=INTERVAL,
    )


LATENCY = MetricConfig("latency-p95", "continuous", "increase")
ERRORS = MetricConfig("error-rate", "count", "increase")


def test_equal_distributions_pass_at_final() -> None:
    rng = np.random.default_rng(1)
    verdict = run(
        [LATENCY, ERRORS],
        {"latency-p95": continuous_samples(rng, 15), "error-rate": count_samples(rng, 15)},
    )
    assert verdict.outcome == PASS, render_table(verdict)
    for metric in verdict.metrics:
        assert metric.verdict == PASS
        assert metric.ci_low is not None and metric.ci_high is not None
        assert metric.ci_low <= 1.05 and metric.ci_high >= 0.95
    assert verdict.summary.startswith("pass")


def test_error_regression_fails_early_with_direction_and_explanation() -> None:
    rng = np.random.default_rng(2)
    samples = {"error-rate": count_samples(rng, 10, error_ratio=0.02, factor=3.0)}
    verdict = run([ERRORS], samples, final=False)
    assert verdict.outcome == FAIL  # anytime-valid: an interim look may stop the analysis
    metric = verdict.metric("error-rate")
    assert metric.verdict == FAIL
    assert metric.estimate is not None and metric.estimate > 2.0
    assert metric.ci_low is not None and metric.ci_low > 1.05
    assert metric.log_e_value is not None and metric.log_threshold is not None
    assert metric.log_e_value >= metric.log_threshold
    assert "error-rate FAIL: canary" in metric.explanation and "x baseline" in metric.explanation
    assert "e-value" in metric.explanation and "error-rate" in verdict.summary


def test_latency_regression_fails_with_direction_and_explanation() -> None:
    rng = np.random.default_rng(3)
    verdict = run([LATENCY], {"latency-p95": continuous_samples(rng, 12, factor=1.4)})
    metric = verdict.metric("latency-p95")
    assert verdict.outcome == FAIL and metric.verdict == FAIL
    assert metric.estimate is not None and 1.3 < metric.estimate < 1.5
    assert metric.ci_low is not None and metric.ci_low > 1.05
    assert "+" in metric.explanation and "vs baseline" in metric.explanation


def test_direction_decrease_fails_only_on_a_drop() -> None:
    rng = np.random.default_rng(4)
    dropped = {"throughput": continuous_samples(rng, 12, factor=0.6)}
    decrease = MetricConfig("throughput", "continuous", "decrease")
    increase = MetricConfig("throughput", "continuous", "increase")
    assert run([decrease], dropped).metric("throughput").verdict == FAIL
    assert run([increase], dropped).metric("throughput").verdict == PASS
    raised = {"throughput": continuous_samples(np.random.default_rng(5), 12, factor=1.6)}
    assert run([decrease], raised).metric("throughput").verdict == PASS


@pytest.mark.parametrize("factor", [0.6, 1.6])
def test_direction_either_fails_both_ways(factor: float) -> None:
    rng = np.random.default_rng(6)
    either = MetricConfig("cpu", "continuous", "either")
    verdict = run([either], {"cpu": continuous_samples(rng, 12, factor=factor)})
    assert verdict.metric("cpu").verdict == FAIL


def test_count_direction_decrease() -> None:
    rng = np.random.default_rng(7)
    successes = MetricConfig("success", "count", "decrease")
    samples = {"success": count_samples(rng, 10, error_ratio=0.5, factor=0.5)}
    assert run([successes], samples).metric("success").verdict == FAIL


def test_negligible_shift_within_tolerance_passes() -> None:
    rng = np.random.default_rng(8)
    # A real +2% shift measured very precisely: inside the 5% tolerance, so not a regression.
    verdict = run([LATENCY], {"latency-p95": continuous_samples(rng, 40, factor=1.02, sd=0.02)})
    metric = verdict.metric("latency-p95")
    assert verdict.outcome == PASS
    assert metric.ci_low is not None and metric.ci_low > 1.0  # the shift is real ...
    assert metric.ci_high is not None and metric.ci_high < 1.05  # ... and provably negligible
    # The same precision catches a shift beyond the tolerance, so the pass above is not vacuous.
    beyond = run([LATENCY], {"latency-p95": continuous_samples(rng, 40, factor=1.09, sd=0.02)})
    assert beyond.outcome == FAIL


def test_negligible_error_ratio_change_passes() -> None:
    rng = np.random.default_rng(9)
    samples = {"error-rate": count_samples(rng, 30, error_ratio=0.05, factor=1.02, requests_per_s=2000)}
    assert run([ERRORS], samples).outcome == PASS


def test_all_zero_baseline_with_canary_errors_fails() -> None:
    stamps = times(6)
    canary_errors = np.zeros(stamps.size)
    canary_errors[::3] = 1.0 / STEP  # an error every 36 s on the canary, none on the baseline
    samples = MetricSamples(
        series(canary_errors, stamps),
        series(np.zeros(stamps.size), stamps),
        series(np.full(stamps.size, 10.0), stamps),
        series(np.full(stamps.size, 90.0), stamps),
    )
    verdict = run([ERRORS], {"error-rate": samples}, final=False)
    metric = verdict.metric("error-rate")
    assert verdict.outcome == FAIL and metric.verdict == FAIL
    assert metric.ci_low is not None and metric.ci_low > 2.0
    assert all(math.isfinite(test.log_e_value) for test in metric.tests)
    json.dumps(verdict.to_dict(), allow_nan=False)  # no inf/NaN leaks into the verdict


def test_missing_baseline_error_series_counts_as_zero_errors_when_traffic_is_known() -> None:
    # Prometheus returns nothing for an error counter that never incremented (kayenta#426).
    stamps = times(6)
    canary_errors = np.zeros(stamps.size)
    canary_errors[::3] = 1.0 / STEP
    samples = MetricSamples(
        series(canary_errors, stamps),
        Series(),
        series(np.full(stamps.size, 10.0), stamps),
        series(np.full(stamps.size, 90.0), stamps),
    )
    metric = run([ERRORS], {"error-rate": samples}).metric("error-rate")
    assert metric.verdict == FAIL
    assert "no baseline series returned, counted as 0 events" in metric.explanation  # visible, not silent


def test_no_errors_on_either_side_passes() -> None:
    stamps = times(6)
    zeros = series(np.zeros(stamps.size), stamps)
    samples = MetricSamples(
        zeros, zeros, series(np.full(stamps.size, 10.0), stamps), series(np.full(stamps.size, 90.0), stamps)
    )
    assert run([ERRORS], {"error-rate": samples}).outcome == PASS


@pytest.mark.parametrize("with_totals", [True, False])
def test_unequal_traffic_same_error_ratio_passes(with_totals: bool) -> None:
    rng = np.random.default_rng(10)
    samples = {
        "error-rate": count_samples(rng, 15, error_ratio=0.02, canary_share=0.1, with_totals=with_totals)
    }
    verdict = run([ERRORS], samples, canary_weight=10.0)
    metric = verdict.metric("error-rate")
    assert verdict.outcome == PASS, metric.explanation
    assert metric.estimate is not None and 0.7 < metric.estimate < 1.4
    # The raw canary error *rate* is a tenth of the baseline's; only the exposure makes them comparable.
    assert ("total series" in metric.explanation) == with_totals


def _missing_data_cases() -> dict[str, MetricSamples]:
    rng = np.random.default_rng(11)
    good = continuous_samples(rng, 10)
    stamps = np.asarray(good.canary.timestamps)
    half_missing = np.asarray(good.canary.values).copy()
    half_missing[: int(stamps.size * 0.7)] = np.nan
    return {
        "canary empty": MetricSamples(Series(), good.baseline),
        "baseline empty": MetricSamples(good.canary, Series()),
        "both empty": MetricSamples(Series(), Series()),
        "canary all NaN": MetricSamples(series(np.full(stamps.size, np.nan), stamps), good.baseline),
        "two points each": MetricSamples(
            series(np.array([1.0, 1.1]), stamps[:2]), series(np.array([1.0, 1.0]), stamps[:2])
        ),
        "canary missing most intervals": MetricSamples(series(half_missing, stamps), good.baseline),
    }


@pytest.mark.parametrize("case", sorted(_missing_data_cases()))
def test_missing_data_never_passes(case: str) -> None:
    samples = _missing_data_cases()[case]
    verdict = run([LATENCY], {"latency-p95": samples})
    assert verdict.metric("latency-p95").verdict in (NODATA, INCONCLUSIVE)
    assert verdict.outcome == INCONCLUSIVE
    assert run([LATENCY], {"latency-p95": samples}, final=False).outcome == RUNNING


def test_metric_without_samples_is_nodata() -> None:
    rng = np.random.default_rng(12)
    verdict = run([LATENCY, ERRORS], {"error-rate": count_samples(rng, 10)})
    assert verdict.metric("latency-p95").verdict == NODATA
    assert verdict.metric("error-rate").verdict == PASS
    assert verdict.outcome == INCONCLUSIVE


def test_provider_error_is_error_and_never_passes() -> None:
    failed = MetricSamples(Series(), Series(), error="HTTPError: 503 Service Unavailable")
    verdict = run([LATENCY], {"latency-p95": failed})
    metric = verdict.metric("latency-p95")
    assert metric.verdict == ERROR and "503" in metric.explanation
    assert verdict.outcome == INCONCLUSIVE
    assert run([LATENCY], {"latency-p95": failed}, final=False).outcome == RUNNING
    # Data already in hand still counts: a clear regression fails even if this look's query erred.
    rng = np.random.default_rng(13)
    regressed = continuous_samples(rng, 12, factor=1.6)
    with_error = MetricSamples(regressed.canary, regressed.baseline, error="timeout")
    assert run([LATENCY], {"latency-p95": with_error}).metric("latency-p95").verdict == FAIL


def test_critical_metric_fails_early_on_an_interim_look() -> None:
    rng = np.random.default_rng(14)
    samples = {"latency-p95": continuous_samples(rng, 4, level=100.0)}  # canary ~100, far above 50
    critical = MetricConfig("latency-p95", "continuous", "increase", max=50.0, critical=True)
    verdict = run([critical], samples, final=False)
    assert verdict.outcome == FAIL
    assert verdict.metric("latency-p95").thresholds[0].violated
    assert "critical" in verdict.summary
    # Not critical: a broken limit is only a point-in-time reading, so the analysis goes on ...
    relaxed = MetricConfig("latency-p95", "continuous", "increase", max=50.0)
    interim = run([relaxed], samples, final=False)
    assert interim.outcome == RUNNING and interim.metric("latency-p95").verdict == FAIL
    # ... and fails if the limit is still broken at the end.
    assert run([relaxed], samples, final=True).outcome == FAIL


def test_max_threshold_needs_a_persistent_violation() -> None:
    stamps = times(6)
    canary = np.full(stamps.size, 40.0)
    canary[-2:] = 500.0  # a spike in the latest scrapes only
    samples = {
        "latency-p95": MetricSamples(series(canary, stamps), series(np.full(stamps.size, 40.0), stamps))
    }
    capped = MetricConfig("latency-p95", "continuous", "increase", max=50.0, critical=True)
    assert not run([capped], samples).metric("latency-p95").threshold_violated
    canary[-POINTS_PER_INTERVAL - 1 :] = 60.0  # the whole latest interval above the limit
    samples = {
        "latency-p95": MetricSamples(series(canary, stamps), series(np.full(stamps.size, 40.0), stamps))
    }
    verdict = run([capped], samples)
    assert verdict.metric("latency-p95").threshold_violated and verdict.outcome == FAIL
    floored = MetricConfig("latency-p95", "continuous", "increase", min=70.0)
    assert run([floored], samples).metric("latency-p95").thresholds[0].violated


def test_verdict_is_deterministic_and_serialisable() -> None:
    rng = np.random.default_rng(15)
    samples = {"latency-p95": continuous_samples(rng, 8, factor=1.1), "error-rate": count_samples(rng, 8)}
    first = run([LATENCY, ERRORS], samples, final=False)
    second = run([LATENCY, ERRORS], dict(reversed(list(samples.items()))), final=False)
    assert first == second
    payload = json.dumps(first.to_dict(), allow_nan=False)
    assert AnalysisVerdict.from_dict(json.loads(payload)) == first
    table = render_table(first)
    assert "latency-p95" in table and "error-rate" in table and first.outcome.upper() in table


def test_canary_with_far_fewer_samples_still_pairs_up() -> None:
    rng = np.random.default_rng(16)
    for factor, expected in ((1.0, PASS), (1.5, FAIL)):
        full = continuous_samples(rng, 15, factor=factor)
        # The canary is scraped once a minute, the baseline every 12 s, and 10% of baseline points are lost.
        canary = Series(
            full.canary.timestamps[::POINTS_PER_INTERVAL], full.canary.values[::POINTS_PER_INTERVAL]
        )
        kept = rng.random(len(full.baseline)) > 0.1
        baseline = Series(
            tuple(t for t, keep in zip(full.baseline.timestamps, kept, strict=True) if keep),
            tuple(v for v, keep in zip(full.baseline.values, kept, strict=True) if keep),
        )
        verdict = run([LATENCY], {"latency-p95": MetricSamples(canary, baseline)})
        assert verdict.outcome == expected, verdict.metric("latency-p95").explanation
        assert verdict.metric("latency-p95").intervals >= 14


def test_warmup_intervals_are_left_out() -> None:
    rng = np.random.default_rng(17)
    samples = continuous_samples(rng, 12)
    values = np.asarray(samples.canary.values)
    values[: 2 * POINTS_PER_INTERVAL] *= 3.0  # a cold canary for the first two minutes
    cold = {"latency-p95": MetricSamples(series(values), samples.baseline)}
    metric = MetricConfig("latency-p95", "continuous", "increase", tolerance=0.2)
    with_warmup = judge(
        [metric], cold, JudgeConfig(), final=True, interval_seconds=INTERVAL, warmup_intervals=2
    )
    assert with_warmup.outcome == PASS
    assert with_warmup.metric("latency-p95").intervals == 10


def test_spread_test_catches_a_much_noisier_canary_at_equal_traffic() -> None:
    rng = np.random.default_rng(18)
    size = 20 * POINTS_PER_INTERVAL + 1
    baseline = 100.0 * np.exp(rng.normal(0, 0.05, size))
    canary = 100.0 * np.exp(rng.normal(0, 0.25, size))  # same level, five times the spread
    samples = {"latency-p95": MetricSamples(series(canary), series(baseline))}
    verdict = run([LATENCY], samples, canary_weight=50.0)
    metric = verdict.metric("latency-p95")
    assert verdict.outcome == FAIL
    assert [test.name for test in metric.tests if test.rejected] == ["dispersion"]
    assert "spread" in metric.explanation
    # At 10% weight the canary's own sampling noise could explain it, so no spread test is run.
    assert [
        test.name for test in run([LATENCY], samples, canary_weight=10.0).metric("latency-p95").tests
    ] == ["location"]


def test_rejects_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        MetricConfig("x", "gauge", "increase")
    with pytest.raises(ValueError):
        MetricConfig("x", "count", "up")
    with pytest.raises(ValueError):
        JudgeConfig(alpha=0.0)
    with pytest.raises(ValueError):
        run([LATENCY, LATENCY], {})


def test_aa_false_positive_rate_is_controlled_across_metrics_and_looks() -> None:
    """60 A/A analyses x 10 metrics x 20 looks at the edge of the null (tolerance 0, so any true
    difference would count), alpha 0.1: the share of analyses failing at *any* look stays below alpha,
    despite autocorrelated series, shared drift, overdispersion-free counts and a 10% canary."""
    alpha = 0.1
    replications, looks = 60, 20
    metrics = [
        MetricConfig(f"latency-{index}", "continuous", "increase", tolerance=0.0) for index in range(6)
    ]
    metrics += [MetricConfig(f"errors-{index}", "count", "increase", tolerance=0.0) for index in range(4)]
    rng = np.random.default_rng(2024)
    failures = 0
    for _ in range(replications):
        full = {
            metric.name: (
                continuous_samples(rng, looks)
                if metric.kind == "continuous"
                else count_samples(rng, looks, 0.02)
            )
            for metric in metrics
        }
        for look in range(1, looks + 1):
            upto = look * POINTS_PER_INTERVAL + 1
            samples = {name: _head(entry, upto) for name, entry in full.items()}
            verdict = run(metrics, samples, final=look == looks, config=JudgeConfig(alpha=alpha))
            if verdict.outcome == FAIL:
                failures += 1
                break
    assert failures / replications <= alpha


def _head(samples: MetricSamples, upto: int) -> MetricSamples:
    def cut(entry: Series | None) -> Series | None:
        return None if entry is None else Series(entry.timestamps[:upto], entry.values[:upto])

    return MetricSamples(
        cut(samples.canary) or Series(),
        cut(samples.baseline) or Series(),
        cut(samples.canary_total),
        cut(samples.baseline_total),
    )


def test_importing_the_package_does_not_load_numpy_or_scipy() -> None:
    """Every ``aicd`` CLI start imports the judge's data types; the statistics load on first use."""
    import subprocess
    import sys

    code = (
        "import sys, aicd.judge as j\n"
        "assert 'scipy' not in sys.modules and 'numpy' not in sys.modules, 'eager import'\n"
        "assert j.MetricConfig('m', 'count', 'increase').tolerance == 0.05\n"
        "from aicd.judge import judge, render_table\n"
        "assert 'scipy' in sys.modules and callable(judge) and callable(render_table)\n"
        "try:\n    j.no_such_name\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
