"""Words: the sentence an on-call engineer reads for each metric, the analysis summary, and the details
view (verdict table and per-test lines with e-values and error budgets) for ``--json`` readers and tuners.

Sentences say what changed, by how much and how sure the judge is, in percentages and "N times", with the
confidence of the one bound that decided; the statistics' own vocabulary (e-values, alpha shares,
confidence sequences) stays in :func:`render_table` and :func:`render_details`.
"""

from __future__ import annotations

import math

from aicd.judge.evidence import MetricEvidence
from aicd.judge.model import (
    AnalysisVerdict,
    Direction,
    JudgeConfig,
    Kind,
    MetricConfig,
    MetricOutcome,
    MetricVerdict,
    Outcome,
    Statistic,
    TestName,
    TestResult,
    ThresholdCheck,
)
from aicd.spec.durations import format_duration


# ------------------------------------------------------------------------------------------ numbers
def format_ratio(ratio: float | None) -> str:
    """1.12 -> '+12%', 1.034 -> '+3.4%', 2.5 -> '2.50x': percentages for modest changes, multiples for large."""
    if ratio is None:
        return "n/a"
    if ratio >= 999.5:
        return ">=1000x"
    if ratio <= 0.0015:
        return "<=0.001x"
    if ratio >= 2 or ratio <= 0.5:
        return f"{ratio:.2f}x"
    change = (ratio - 1) * 100
    return f"{change:+.1f}%" if abs(change) < 10 else f"{change:+.0f}%"


def format_confidence(confidence: float) -> str:
    """0.99 -> '99%', 0.99667 -> '99.7%', 0.99996 -> '99.996%'."""
    digits = max(2, math.ceil(-math.log10(max(1.0 - confidence, 1e-12))) + 1)
    text = f"{100 * confidence:.{digits}g}"
    return f"{text}%"


def format_points(difference: float | None) -> str:
    """An absolute difference of event ratios in percentage points: 0.0012 -> '+0.12 points'."""
    if difference is None:
        return "n/a"
    return f"{100 * difference:+.2g} points"


def format_share(ratio: float | None) -> str:
    if ratio is None:
        return "n/a"
    return f"{100 * ratio:.2g}%"


def compare(ratio: float | None) -> str:
    """How the canary compares: '12% higher than on the baseline', '2.1 times the baseline's'."""
    if ratio is None:
        return "not comparable with the baseline"
    if ratio >= 999.5:
        return "more than 1000 times the baseline's"
    if ratio >= 2 or ratio <= 0.5:
        return f"{ratio:.2g} times the baseline's"
    change = (ratio - 1) * 100
    if abs(change) < 0.05:
        return "the same as on the baseline"
    amount = f"{abs(change):.1f}%" if abs(change) < 10 else f"{abs(change):.0f}%"
    return f"{amount} {'higher' if change > 0 else 'lower'} than on the baseline"


def tolerance_text(metric: MetricConfig) -> str:
    amount = f"{100 * metric.tolerance:.3g}%"
    side = {Direction.INCREASE: "+", Direction.DECREASE: "-", Direction.EITHER: "+/-"}[metric.direction]
    text = f"tolerance {side}{amount}"
    if metric.absolute_tolerance > 0:
        text += f" or {100 * metric.absolute_tolerance:.2g} points"
    return text


def _duration(intervals: int, interval_s: float) -> str:
    return format_duration(max(1, intervals) * interval_s)


# ------------------------------------------------------------------------------------------ sentences
def explain_metric(
    metric: MetricConfig,
    verdict: MetricOutcome,
    evidence: MetricEvidence | None,
    thresholds: tuple[ThresholdCheck, ...],
    error: str | None,
    config: JudgeConfig,
    interval_s: float | None = None,
) -> str:
    """The one or two sentences about a metric that status, Slack and the CLI show."""
    name = metric.name
    if evidence is None:
        return (
            f"{name} has no data: no samples were fetched. Check the query and that both tracks are scraped."
        )
    if verdict == MetricOutcome.ERROR:
        return f"{name}: the query failed at this look ({error})."
    if verdict == MetricOutcome.NODATA:
        lacking = ""
        limit = f"(limit {config.no_data_limit:.0%})"
        if evidence.canary_samples and evidence.baseline_samples:
            if evidence.no_data_share > config.no_data_limit:
                lacking = f"; {evidence.no_data_share:.0%} of the intervals lack data on a side {limit}"
            elif evidence.recent_no_data_share > config.no_data_limit:
                lacking = (
                    f"; {evidence.recent_no_data_share:.0%} of the latest half of the intervals lack data on a"
                    f" side {limit}: what the canary did before says nothing of it now"
                )
        return (
            f"{name} has no data: {evidence.canary_samples} canary and {evidence.baseline_samples} baseline "
            f"points{lacking}. Check the query and that both tracks are scraped."
        )
    if verdict == MetricOutcome.FAIL:
        shown = _telling_failure(metric, [test for test in evidence.tests if test.rejected])
        sentences = [_failure(metric, shown, evidence, interval_s)] if shown is not None else []
        sentences += [_limit(metric, check, evidence.regression) for check in thresholds if check.violated]
        return " ".join(sentences)
    if verdict == MetricOutcome.PASS:
        return _shown_safe(metric, evidence)
    # Inconclusive.
    enough = evidence.canary_samples >= config.min_samples and evidence.baseline_samples >= config.min_samples
    if not enough or not evidence.testable:
        need = f"at least {config.min_samples} points per side"
        if metric.kind == Kind.CONTINUOUS:
            need += " and a few paired intervals"
        return (
            f"{name} has too little data yet: {evidence.canary_samples} canary and "
            f"{evidence.baseline_samples} baseline points in {evidence.intervals} paired intervals "
            f"(it needs {need})."
        )
    if evidence.unjudgeable:
        return f"{name} cannot be shown within tolerance: {evidence.unjudgeable}."
    return _not_shown(metric, evidence)


def _telling_failure(metric: MetricConfig, rejected: list[TestResult]) -> TestResult | None:
    """The test whose failure the sentence tells: the whole analysis, unless the recent window shows a
    regression clearly larger than the whole analysis does (it grew) or it alone shows one."""
    if not rejected:
        return None
    first = rejected[0]
    recent = next((test for test in rejected if test.name == TestName.RECENT), None)
    if recent is None or recent is first:
        return first
    grown, overall = _excess(metric, recent), _excess(metric, first)
    return recent if grown is not None and overall is not None and grown > 1.5 * overall else first


def _excess(metric: MetricConfig, test: TestResult) -> float | None:
    """How far a test's estimate lies beyond the band on the bad side (ratio units)."""
    if test.estimate is None:
        return None
    if (
        test.allowed_high is not None
        and metric.direction != Direction.DECREASE
        and test.estimate > test.allowed_high
    ):
        return test.estimate - test.allowed_high
    if test.allowed_low is not None and test.estimate < test.allowed_low:
        return test.allowed_low - test.estimate
    return 0.0


def _failure(
    metric: MetricConfig, test: TestResult, evidence: MetricEvidence, interval_s: float | None
) -> str:
    name = metric.name
    bound = _bad_side_bound(metric, test)
    sure = f"{format_confidence(test.confidence)} confidence"
    if test.name == TestName.DISPERSION:
        return (
            f"{name} is much more erratic on the canary: its spread is {format_ratio(test.estimate)} the "
            f"baseline's (at least {format_ratio(test.ci_low)}, {sure}), more than the "
            f"{format_ratio(test.allowed_high)} this traffic split explains."
        )
    if test.name == TestName.ABSOLUTE:
        return (
            f"{name}: the canary's event ratio is {format_points(test.estimate)} away from the baseline's "
            f"(at least {format_points(test.ci_low if test.allowed_high is not None else test.ci_high)}, {sure}); "
            f"{tolerance_text(metric)}."
        )
    events = f"; {evidence.events_note}" if evidence.events_note else ""
    if test.name == TestName.RECENT:
        window = (
            f"the last {_duration(test.observations, interval_s)}" if interval_s else "the latest intervals"
        )
        return (
            f"{name} got worse during the analysis: over {window} the canary was {compare(test.estimate)} "
            f"({_bound_words(metric, bound)}, {sure}); {tolerance_text(metric)}."
        )
    if test.name == TestName.PODS:
        return (
            f"{name} on the canary is {compare(test.estimate)}'s typical pod, further than its pods differ "
            f"from one another ({_bound_words(metric, bound)}, {sure}); {tolerance_text(metric)}."
        )
    return (
        f"{name} on the canary is {compare(test.estimate)} ({_bound_words(metric, bound)}, {sure}{events}); "
        f"{tolerance_text(metric)}."
    )


def _limit(metric: MetricConfig, check: ThresholdCheck, regression: bool) -> str:
    side = "above the max" if check.bound == "max" else "below the min"
    observed = "n/a" if check.observed is None else f"{check.observed:.4g}"
    text = f"{metric.name} on the canary broke its limit: the recent median {observed} is {side} of {check.limit:g}."
    if not metric.critical and not regression:
        text += " It is not critical, so it fails the analysis only if still broken at the end."
    return text


def _shown_safe(metric: MetricConfig, evidence: MetricEvidence) -> str:
    main = evidence.tests[0]
    name = metric.name
    confidence = format_confidence(main.safe_confidence) if main.safe_confidence is not None else "n/a"
    if main.within:
        return (
            f"{name} is within tolerance: the canary is {compare(main.estimate)} "
            f"({_safe_words(metric, main)}, {confidence} confidence; {tolerance_text(metric)})."
        )
    absolute = next((test for test in evidence.tests if test.name == TestName.ABSOLUTE), None)
    if absolute is not None and absolute.safe_confidence is not None:
        limit = absolute.safe_high if absolute.allowed_high is not None else absolute.safe_low
        return (
            f"{name} is within tolerance: {evidence.events_note}, so the canary's event ratio is at most "
            f"{format_points(limit)} away from the baseline's ({format_confidence(absolute.safe_confidence)} "
            f"confidence; {tolerance_text(metric)})."
        )
    return f"{name} is within tolerance ({tolerance_text(metric)})."


def _not_shown(metric: MetricConfig, evidence: MetricEvidence) -> str:
    main = evidence.tests[0]
    name = metric.name
    if main.estimate is None:
        facts = evidence.events_note or "no events on either side"
        absolute = next((test for test in evidence.tests if test.name == TestName.ABSOLUTE), None)
        if absolute is not None and absolute.safe_high is not None:
            return (
                f"{name} could not be shown safe yet: {facts}, so the canary's event ratio could still be "
                f"{format_points(absolute.safe_high)} above the baseline's ({tolerance_text(metric)})."
            )
        hint = " A relative tolerance cannot be shown without events; an absoluteTolerance can."
        return f"{name} could not be shown safe yet: {facts}.{hint if metric.absolute_tolerance == 0 else ''}"
    if not _inside_allowed(main, main.estimate):
        bound = _bad_side_bound(metric, main)
        return (
            f"{name} could not be shown safe yet: the canary is {compare(main.estimate)}, beyond its "
            f"{tolerance_text(metric)}, but not yet shown to be more than noise (it could be as little as "
            f"{format_ratio(bound)})."
        )
    worst = _good_side_worst(metric, main)
    return (
        f"{name} could not be shown safe yet: the canary is {compare(main.estimate)}, but it could be as much "
        f"as {format_ratio(worst)} ({tolerance_text(metric)})."
    )


def settle_text(
    metric: MetricConfig, verdict: MetricOutcome, evidence: MetricEvidence, interval_s: float
) -> str:
    """What would settle an inconclusive metric, in time at the current traffic."""
    if verdict != MetricOutcome.INCONCLUSIVE:
        return ""
    if evidence.unjudgeable:
        return "More data will not settle it; a query or metric kind that can will."
    more_traffic = metric.kind == Kind.COUNT
    factor = evidence.settle_factor
    if factor is None or not math.isfinite(factor) or evidence.intervals == 0:
        return "More time or more canary traffic will tell." if more_traffic else "More time will tell."
    intervals = max(1, math.ceil((factor - 1.0) * evidence.intervals))
    if intervals > 1000:
        return (
            "At this traffic it would take very long to settle; more canary traffic or a wider tolerance would."
            if more_traffic
            else "At this noise level it would take very long to settle; a wider tolerance would."
        )
    more = format_duration(intervals * interval_s)
    if more_traffic:
        return f"About {more} more at this traffic would settle it, or less with more canary traffic."
    return f"About {more} more at this noise level would settle it."


def _inside_allowed(test: TestResult, value: float) -> bool:
    return (test.allowed_high is None or value <= test.allowed_high) and (
        test.allowed_low is None or value >= test.allowed_low
    )


def _bad_side_bound(metric: MetricConfig, test: TestResult) -> float | None:
    """The fail-side bound that decides (or would decide) a failure."""
    if metric.direction == Direction.DECREASE:
        return test.ci_high
    if metric.direction == Direction.EITHER and test.estimate is not None and test.estimate < 1.0:
        return test.ci_high
    return test.ci_low


def _good_side_worst(metric: MetricConfig, test: TestResult) -> float | None:
    """The pass-side bound furthest towards the bad side: how bad the canary could still be."""
    if metric.direction == Direction.DECREASE:
        return test.safe_low
    if metric.direction == Direction.EITHER and test.estimate is not None and test.estimate < 1.0:
        return test.safe_low
    return test.safe_high


def _bound_words(metric: MetricConfig, bound: float | None) -> str:
    downward = metric.direction == Direction.DECREASE or (bound is not None and bound < 1.0)
    return f"at {'most' if downward else 'least'} {format_ratio(bound)}"


def _safe_words(metric: MetricConfig, test: TestResult) -> str:
    if metric.direction == Direction.EITHER:
        return f"between {format_ratio(test.safe_low)} and {format_ratio(test.safe_high)}"
    if metric.direction == Direction.DECREASE:
        return f"at worst {format_ratio(test.safe_low)}"
    return f"at most {format_ratio(test.safe_high)}"


def summarise(outcome: Outcome, verdicts: tuple[MetricVerdict, ...]) -> str:
    """The analysis in one paragraph: what failed, or that all passed, or what could not be shown safe."""
    if outcome == Outcome.FAIL:
        return " ".join(v.explanation for v in verdicts if v.verdict == MetricOutcome.FAIL)
    if outcome == Outcome.PASS:
        names = ", ".join(v.name for v in verdicts)
        return f"all {len(verdicts)} metrics shown within tolerance ({names})."
    unsettled = [v for v in verdicts if v.verdict != MetricOutcome.PASS]
    return " ".join(f"{v.explanation} {v.settle}".strip() for v in unsettled)


# ------------------------------------------------------------------------------------------ details
def format_evidence(test: TestResult) -> str:
    """The evidence against the band and what a rejection needs: 'e-value 412 >= 375', 'p 3e-06 <= 4e-05'."""
    if test.statistic == Statistic.BOUNDS:
        return "bounds vs band"
    needed = math.exp(test.log_threshold)
    if test.statistic == Statistic.P_VALUE:
        p_value = math.exp(-test.log_evidence)
        return f"p {p_value:.2g} {'<=' if test.rejected else '>'} {1 / needed:.2g}"
    if test.log_evidence < math.log(1e-3):
        value = "<0.001"
    elif test.log_evidence > math.log(1e5):
        value = f"{math.exp(min(test.log_evidence, 700.0)):.1e}"
    else:
        value = f"{math.exp(test.log_evidence):.3g}"
    return f"e-value {value} {'>=' if test.rejected else '<'} {needed:.4g}"


def format_allowed(test: TestResult, values: str = "ratio") -> str:
    show = format_points if values == "points" else format_ratio
    if test.allowed_low is None and test.allowed_high is None:
        return "any"
    if test.allowed_low is None:
        return f"<={show(test.allowed_high)}"
    if test.allowed_high is None:
        return f">={show(test.allowed_low)}"
    return f"{show(test.allowed_low)}..{show(test.allowed_high)}"


def describe_test(test: TestResult) -> str:
    """One details line: 'location: +12% (fail side 99.7%: +6.1%..+18%; pass side 99%: ..+16%), allowed
    <=+5.0%, e-value 412 >= 375 -> regression'."""
    show = format_points if test.name == TestName.ABSOLUTE else format_ratio
    if test.estimate is None:
        return f"{test.name}: no data to compare"
    fail_side = (
        f"fail side {format_confidence(test.confidence)}: {show(test.ci_low)}..{show(test.ci_high)}"
        if test.ci_low is not None or test.ci_high is not None
        else "not bounded yet"
    )
    pass_side = ""
    if test.safe_confidence is not None:
        pass_side = f"; pass side {format_confidence(test.safe_confidence)}: {show(test.safe_low)}..{show(test.safe_high)}"
    state = "regression" if test.rejected else "shown within" if test.within else "open"
    allowed = format_allowed(test, "points" if test.name == TestName.ABSOLUTE else "ratio")
    return (
        f"{test.name}: {show(test.estimate)} over {test.observations} intervals ({fail_side}{pass_side}), "
        f"allowed {allowed}, {format_evidence(test)} -> {state}"
    )


def describe_threshold(check: ThresholdCheck) -> str:
    observed = "n/a" if check.observed is None else f"{check.observed:.4g}"
    state = "VIOLATED" if check.violated else "ok"
    return f"{check.bound} {check.limit:g}: recent canary median {observed} {state}"


def render_table(verdict: AnalysisVerdict) -> str:
    """The verdict for people: the summary, a table of the metrics and each metric's sentence."""
    header = ("metric", "verdict", "canary vs baseline", "plausible range", "points c/b", "intervals")
    rows = [header]
    for metric in verdict.metrics:
        rows.append(
            (
                metric.name + (" (critical)" if metric.critical else ""),
                metric.verdict.upper(),
                format_ratio(metric.estimate),
                _plausible(metric),
                f"{metric.canary_samples}/{metric.baseline_samples}",
                str(metric.intervals),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [f"analysis {verdict.outcome.upper()}: {verdict.summary}", ""]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    if verdict.metrics:
        lines.append("")
        lines.extend(f"- {metric.explanation} {metric.settle}".rstrip() for metric in verdict.metrics)
    return "\n".join(lines)


def _plausible(metric: MetricVerdict) -> str:
    """The range the canary/baseline ratio lies in, each end from the bound that decides on its side."""
    if metric.direction == Direction.INCREASE:
        return _range(metric.ci_low, metric.safe_high)
    if metric.direction == Direction.DECREASE:
        return _range(metric.safe_low, metric.ci_high)
    return _range(metric.ci_low, metric.ci_high)


def render_details(verdict: AnalysisVerdict) -> str:
    """Every test of every metric with its bounds, levels and evidence (the statistics behind the words):
    fail-side bounds at the metric's share of alpha, pass-side bounds at alpha, e-values or p-values against
    the thresholds they must reach."""
    lines = []
    for metric in verdict.metrics:
        lines.append(f"{metric.name} [{metric.kind}, {metric.direction}] {metric.verdict.upper()}")
        lines.extend(f"  {describe_test(test)}" for test in metric.tests)
        lines.extend(f"  {describe_threshold(check)}" for check in metric.thresholds)
        if metric.canary_value is not None or metric.baseline_value is not None:
            lines.append(
                f"  level: canary {_level(metric.canary_value)}, baseline {_level(metric.baseline_value)}"
            )
        if metric.detail:
            lines.append(f"  {metric.detail}")
        if metric.error:
            lines.append(f"  query error: {metric.error}")
    return "\n".join(lines)


def _range(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return "-"
    return f"{format_ratio(low) if low is not None else ''}..{format_ratio(high) if high is not None else ''}"


def _level(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
