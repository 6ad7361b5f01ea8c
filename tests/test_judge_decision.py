"""The decision across looks (aicd.judge.decision), without Temporal: when an analysis step goes on, passes,
fails, extends or waits for a human, and when it looks."""

from __future__ import annotations

import pytest

from aicd.judge import (
    Action,
    AnalysisPolicy,
    AnalysisVerdict,
    Direction,
    Kind,
    MetricOutcome,
    MetricVerdict,
    OnInconclusive,
    Outcome,
    ThresholdCheck,
    decide,
    next_look_in,
    planned_intervals,
)

POLICY = AnalysisPolicy(duration_s=300.0, interval_s=60.0)


def metric(
    verdict: MetricOutcome, *, regression: bool = False, critical: bool = False, limit_broken: bool = False
) -> MetricVerdict:
    checks = (ThresholdCheck("max", 1.0, 2.0, True),) if limit_broken else ()
    return MetricVerdict(
        "latency",
        Kind.CONTINUOUS,
        Direction.INCREASE,
        critical,
        verdict,
        f"latency {verdict}",
        regression=regression,
        thresholds=checks,
    )


def verdict(outcome: Outcome, *metrics: MetricVerdict) -> AnalysisVerdict:
    return AnalysisVerdict(outcome, metrics, f"summary {outcome}")


PASSING = verdict(Outcome.PASS, metric(MetricOutcome.PASS))
UNSETTLED = verdict(Outcome.INCONCLUSIVE, metric(MetricOutcome.INCONCLUSIVE))
REGRESSED = verdict(Outcome.FAIL, metric(MetricOutcome.FAIL, regression=True))


def test_a_shown_regression_fails_at_any_look() -> None:
    decision = decide(REGRESSED, POLICY, 60.0)
    assert decision.action == Action.FAIL and decision.verdict.outcome == Outcome.FAIL
    assert decision.reason == "summary fail"


def test_the_analysis_goes_on_until_its_duration_even_when_everything_passes() -> None:
    for elapsed in (60.0, 120.0, 299.0):
        decision = decide(PASSING, POLICY, elapsed)
        assert decision.action == Action.CONTINUE and decision.verdict.outcome == Outcome.RUNNING
    assert decide(PASSING, POLICY, 300.0).action == Action.PASS


def test_a_broken_limit_of_a_non_critical_metric_fails_only_at_the_end() -> None:
    broken = verdict(Outcome.FAIL, metric(MetricOutcome.FAIL, limit_broken=True))
    assert decide(broken, POLICY, 120.0).action == Action.CONTINUE
    assert decide(broken, POLICY, 300.0).action == Action.FAIL
    critical = verdict(Outcome.FAIL, metric(MetricOutcome.FAIL, limit_broken=True, critical=True))
    assert decide(critical, POLICY, 60.0).action == Action.FAIL


@pytest.mark.parametrize(
    ("on_inconclusive", "action"),
    [(OnInconclusive.PAUSE, Action.WAIT_FOR_HUMAN), (OnInconclusive.FAIL, Action.FAIL)],
)
def test_an_inconclusive_end_follows_on_inconclusive(on_inconclusive: OnInconclusive, action: Action) -> None:
    policy = AnalysisPolicy(300.0, 60.0, on_inconclusive)
    decision = decide(UNSETTLED, policy, 300.0)
    assert decision.action == action and decision.verdict.outcome == Outcome.INCONCLUSIVE
    assert "summary inconclusive" in decision.reason


def test_extend_keeps_looking_until_max_duration_then_asks_a_human() -> None:
    policy = AnalysisPolicy(300.0, 60.0, OnInconclusive.EXTEND, max_duration_s=600.0)
    extended = decide(UNSETTLED, policy, 300.0)
    assert extended.action == Action.CONTINUE and extended.extended
    assert extended.verdict.outcome == Outcome.RUNNING
    assert decide(PASSING, policy, 420.0).action == Action.PASS  # the proof arrived during the extension
    assert decide(REGRESSED, policy, 420.0).action == Action.FAIL
    last = decide(UNSETTLED, policy, 600.0)
    assert last.action == Action.WAIT_FOR_HUMAN and "maxDuration" in last.reason


def test_looks_fall_on_every_interval_and_exactly_at_the_end() -> None:
    def schedule(policy: AnalysisPolicy, keep_extending: bool) -> list[float]:
        elapsed, waits = 0.0, []
        while True:
            wait = next_look_in(policy, elapsed)
            waits.append(wait)
            elapsed += wait
            decision = decide(UNSETTLED if keep_extending else PASSING, policy, elapsed)
            if decision.action != Action.CONTINUE:
                return waits

    # The timers of every earlier version of the workflow loop: intervals, then what is left.
    assert schedule(AnalysisPolicy(100.0, 30.0), keep_extending=False) == [30.0, 30.0, 30.0, 10.0]
    extending = AnalysisPolicy(100.0, 30.0, OnInconclusive.EXTEND, max_duration_s=150.0)
    assert schedule(extending, keep_extending=True) == [30.0, 30.0, 30.0, 10.0, 30.0, 20.0]


def test_planned_intervals_cover_the_longest_the_step_may_look() -> None:
    assert planned_intervals(AnalysisPolicy(600.0, 60.0)) == 10
    assert planned_intervals(AnalysisPolicy(610.0, 60.0)) == 11
    assert (
        planned_intervals(AnalysisPolicy(600.0, 60.0, OnInconclusive.EXTEND)) == 30
    )  # three times by default
    assert planned_intervals(AnalysisPolicy(600.0, 60.0, OnInconclusive.EXTEND, max_duration_s=900.0)) == 15


def test_policy_refuses_a_max_duration_shorter_than_the_duration() -> None:
    with pytest.raises(ValueError, match="maxDuration"):
        AnalysisPolicy(600.0, 60.0, OnInconclusive.EXTEND, max_duration_s=300.0)
    with pytest.raises(ValueError):
        AnalysisPolicy(600.0, 60.0, "sometimes")  # type: ignore[arg-type]


def test_a_verdict_without_metrics_never_passes() -> None:
    """The workflow's stand-in when the analysis activity itself failed."""
    broken = AnalysisVerdict(Outcome.INCONCLUSIVE, (), "the analysis could not run: timeout")
    assert decide(broken, POLICY, 60.0).action == Action.CONTINUE
    assert decide(broken, POLICY, 300.0).action == Action.WAIT_FOR_HUMAN
