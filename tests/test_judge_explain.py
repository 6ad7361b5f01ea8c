"""The words of the judge (aicd.judge.explain): sentences an on-call engineer reads, with the statistics
kept for the details view."""

from __future__ import annotations

import numpy as np
import pytest

from aicd.judge import (
    AnalysisVerdict,
    JudgeConfig,
    MetricConfig,
    MetricOutcome,
    MetricSamples,
    Series,
    judge,
    render_details,
    render_table,
)
from aicd.judge.explain import compare, format_confidence, format_ratio
from tests.test_judge import INTERVAL, continuous_samples, count_samples, times

JARGON = ("e-value", "alpha", "CS ", "fail: fail", "1/alpha", "log")


def judged(
    metrics: list[MetricConfig], samples: dict[str, MetricSamples], planned: int | None = None
) -> AnalysisVerdict:
    return judge(
        samples,
        JudgeConfig(tuple(metrics), interval_s=INTERVAL, planned_intervals=planned),
        canary_weight=10.0,
    )


@pytest.mark.parametrize(
    ("ratio", "words"),
    [
        (1.12, "12% higher than on the baseline"),
        (0.97, "3.0% lower than on the baseline"),
        (2.5, "2.5 times the baseline's"),
        (1.0, "the same as on the baseline"),
    ],
)
def test_changes_read_as_percentages_or_multiples(ratio: float, words: str) -> None:
    assert compare(ratio) == words


def test_numbers_are_short() -> None:
    assert format_ratio(1.034) == "+3.4%" and format_ratio(1.25) == "+25%" and format_ratio(3.0) == "3.00x"
    assert format_confidence(0.99) == "99%" and format_confidence(0.996667) == "99.67%"


def test_a_failure_says_what_changed_by_how_much_and_how_sure() -> None:
    rng = np.random.default_rng(1)
    verdict = judged(
        [MetricConfig("latency-p99", "continuous"), MetricConfig("error-rate", "count")],
        {
            "latency-p99": continuous_samples(rng, 12, factor=1.3, sd=0.05),
            "error-rate": count_samples(rng, 12, error_ratio=0.02, factor=3.0),
        },
        planned=20,
    )
    latency = verdict.metric("latency-p99").explanation
    assert latency.startswith("latency-p99 on the canary is ") and "higher than on the baseline" in latency
    assert "at least +" in latency and "confidence" in latency and "tolerance +5%" in latency
    errors = verdict.metric("error-rate").explanation
    assert "times the baseline's" in errors and "events in" in errors
    for text in (latency, errors, verdict.summary):
        for word in JARGON:
            assert word not in text, (word, text)
    assert verdict.summary.startswith("latency-p99 on the canary")  # no "fail:" prefix, no repetition


def test_an_inconclusive_metric_says_it_could_not_be_shown_safe_and_what_would_settle_it() -> None:
    rng = np.random.default_rng(2)
    verdict = judged(
        [MetricConfig("latency-p95", "continuous")], {"latency-p95": continuous_samples(rng, 10, sd=0.1)}
    )
    metric = verdict.metric("latency-p95")
    assert metric.verdict == MetricOutcome.INCONCLUSIVE
    assert metric.explanation.startswith("latency-p95 could not be shown safe yet")
    assert "it could be as much as +" in metric.explanation
    assert metric.settle.startswith("About ") and metric.settle.endswith(
        "more at this noise level would settle it."
    )
    assert metric.settle in verdict.summary


def test_rare_events_say_an_absolute_tolerance_would_help_and_more_traffic_would_settle_it() -> None:
    stamps = times(5)
    zeros = Series(tuple(float(t) for t in stamps), (0.0,) * stamps.size)
    requests = Series(tuple(float(t) for t in stamps), (1.0,) * stamps.size)
    samples = {
        "error-rate": MetricSamples(zeros, zeros, requests, Series(requests.timestamps, (9.0,) * stamps.size))
    }
    relative = judged([MetricConfig("error-rate", "count")], samples).metric("error-rate")
    assert "no events on either side" in relative.explanation or "0 events" in relative.explanation
    assert "absoluteTolerance" in relative.explanation
    absolute = judged([MetricConfig("error-rate", "count", absolute_tolerance=0.001)], samples).metric(
        "error-rate"
    )
    assert absolute.verdict == MetricOutcome.INCONCLUSIVE
    assert "could still be" in absolute.explanation and "points above the baseline's" in absolute.explanation
    assert "at this traffic" in absolute.settle and "more canary traffic" in absolute.settle


def test_the_details_view_keeps_the_statistics() -> None:
    rng = np.random.default_rng(3)
    verdict = judged(
        [MetricConfig("latency-p95", "continuous")],
        {"latency-p95": continuous_samples(rng, 12, factor=1.4)},
        planned=12,
    )
    details = render_details(verdict)
    assert (
        "location:" in details and "e-value" in details and "fail side" in details and "pass side" in details
    )
    assert "recent:" in details and "p " in details  # the recent window's p-value against its share
    table = render_table(verdict)
    assert "e-value" not in table and "plausible range" in table


def test_a_limit_sentence_names_the_limit_and_the_reading() -> None:
    stamps = times(4)
    canary = Series(tuple(float(t) for t in stamps), (80.0,) * stamps.size)
    baseline = Series(tuple(float(t) for t in stamps), (40.0,) * stamps.size)
    capped = MetricConfig("latency-p95", "continuous", max=50.0, critical=True)
    text = (
        judged([capped], {"latency-p95": MetricSamples(canary, baseline)}).metric("latency-p95").explanation
    )
    assert "broke its limit: the recent median 80 is above the max of 50" in text


def test_status_and_slack_say_which_metric_could_not_be_shown_safe_and_what_would_settle_it() -> None:
    from aicd.judge import AnalysisPolicy, decide
    from aicd.messages import DeliveryStatus, TargetStatus
    from aicd.slack_blocks import compact_status, describe_progress
    from aicd.status_view import verdict_lines
    from aicd.workflows.notifications import progress_key

    rng = np.random.default_rng(4)
    verdict = judged(
        [MetricConfig("latency-p95", "continuous")], {"latency-p95": continuous_samples(rng, 10, sd=0.1)}
    )
    decision = decide(verdict, AnalysisPolicy(600.0, 60.0), 600.0)
    target = TargetStatus(
        "prod-a",
        "production",
        "argocd",
        state="awaiting-resume",
        step_kind="analysis",
        weight=10,
        last_verdict=decision.verdict,
        message=f"analysis inconclusive: {decision.reason}",
    )
    slack = describe_progress(target)
    assert "waits for a human" in slack and "latency-p95 could not be shown safe yet" in slack
    assert "more at this noise level would settle it" in slack
    compact = compact_status(
        DeliveryStatus("d", "shop", "f" * 40, "a:1", "paused", targets={"prod-a": target})
    )
    assert compact["targets"][0]["verdict"]["outcome"] == "inconclusive"
    assert "would settle it" in compact["targets"][0]["verdict"]["summary"]
    lines = "\n".join(verdict_lines(decision.verdict))
    assert "latency-p95 could not be shown safe yet" in lines and "e-value" not in lines
    assert "e-value" in "\n".join(verdict_lines(decision.verdict, details=True))
    # While the analysis runs, its looks are not news for the Slack thread.
    running = decide(verdict, AnalysisPolicy(600.0, 60.0), 120.0).verdict
    assert progress_key(TargetStatus("prod-a", "production", "argocd", last_verdict=running))[-1] == ""
