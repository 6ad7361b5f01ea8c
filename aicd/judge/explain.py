"""Human-readable text: one-line metric explanations, the overall summary and the verdict table."""

from __future__ import annotations

import math

from aicd.judge.evidence import DISPERSION_TEST, MetricEvidence
from aicd.judge.model import (
    ERROR,
    FAIL,
    INCONCLUSIVE,
    KIND_CONTINUOUS,
    NODATA,
    AnalysisVerdict,
    MetricConfig,
    TestResult,
    ThresholdCheck,
)


def format_ratio(ratio: float | None) -> str:
    """1.12 -> '+12.0%', 2.5 -> '2.50x': percentages for modest changes, multiples for large ones."""
    if ratio is None:
        return "n/a"
    if ratio >= 999.5:
        return ">=1000x"
    if ratio <= 0.0015:
        return "<=0.001x"
    if ratio >= 2 or ratio <= 0.5:
        return f"{ratio:.2f}x"
    return f"{(ratio - 1) * 100:+.1f}%"


def format_relation(ratio: float | None, subject: str = "canary") -> str:
    text = format_ratio(ratio)
    if ratio is None:
        return f"{subject} vs baseline n/a"
    return f"{subject} {text} baseline" if text.endswith("x") else f"{subject} {text} vs baseline"


def format_e_value(log_e_value: float) -> str:
    if log_e_value < math.log(1e-3):
        return "<0.001"
    if log_e_value > math.log(1e5):
        return f"{math.exp(min(log_e_value, 700.0)):.1e}"
    return f"{math.exp(log_e_value):.3g}"


def format_allowed(test: TestResult) -> str:
    if test.allowed_low is None and test.allowed_high is None:
        return "any"
    if test.allowed_low is None:
        return f"<={format_ratio(test.allowed_high)}"
    if test.allowed_high is None:
        return f">={format_ratio(test.allowed_low)}"
    return f"{format_ratio(test.allowed_low)}..{format_ratio(test.allowed_high)}"


def format_confidence(confidence: float) -> str:
    digits = max(2, math.ceil(-math.log10(max(1.0 - confidence, 1e-12))) + 1)
    return f"{100 * confidence:.{digits}g}%"


def describe_test(test: TestResult) -> str:
    """'canary 2.10x baseline (99.7% CS 1.61x..2.90x, allowed <=+5.0%), e-value 412 >= 300'."""
    subject = "spread" if test.name == DISPERSION_TEST else "canary"
    if test.estimate is None:
        return f"{subject}: no events on either side" if test.name != DISPERSION_TEST else "spread: n/a"
    interval = (
        f"{format_confidence(test.confidence)} CS {format_ratio(test.ci_low)}..{format_ratio(test.ci_high)}"
        if test.ci_low is not None and test.ci_high is not None
        else f"{format_confidence(test.confidence)} CS unbounded yet"
    )
    comparison = ">=" if test.rejected else "<"
    threshold = f"{math.exp(test.log_threshold):.4g}"
    # Judged in both directions, each side gets half of the metric's alpha.
    budget = "2/alpha_i" if test.allowed_low is not None and test.allowed_high is not None else "1/alpha_i"
    return (
        f"{format_relation(test.estimate, subject)} ({interval}, allowed {format_allowed(test)}), "
        f"e-value {format_e_value(test.log_e_value)} {comparison} {budget}={threshold}"
    )


def describe_threshold(check: ThresholdCheck) -> str:
    observed = "n/a" if check.observed is None else f"{check.observed:.4g}"
    state = "VIOLATED" if check.violated else "ok"
    return f"{check.bound} {check.limit:g}: recent canary median {observed} {state}"


def explain_metric(
    metric: MetricConfig,
    verdict: str,
    evidence: MetricEvidence | None,
    thresholds: tuple[ThresholdCheck, ...],
    error: str | None,
    min_samples: int,
    no_data_limit: float,
) -> str:
    parts: list[str] = []
    if verdict == ERROR:
        parts.append(f"query failed ({error})")
    if evidence is None:
        parts.append("no samples were fetched for this metric")
    else:
        if verdict == NODATA:
            parts.append(
                f"no data: {evidence.canary_samples} canary / {evidence.baseline_samples} baseline points, "
                f"{evidence.no_data_share:.0%} of intervals lack data on a side (limit {no_data_limit:.0%})"
            )
        elif verdict == INCONCLUSIVE:
            need = f">={min_samples} points per side"
            if metric.kind == KIND_CONTINUOUS:
                need += " and >=2 paired intervals"
            parts.append(
                f"not enough data: {evidence.canary_samples} canary / {evidence.baseline_samples} baseline "
                f"points, {evidence.intervals} paired intervals (need {need})"
            )
        parts.extend(
            describe_test(test) for test in evidence.tests if test.estimate is not None or verdict != NODATA
        )
        if evidence.detail:
            parts.append(evidence.detail)
    parts.extend(describe_threshold(check) for check in thresholds)
    if (
        verdict == FAIL
        and not metric.critical
        and any(c.violated for c in thresholds)
        and not _rejected(evidence)
    ):
        parts.append("non-critical limit: fails the analysis if still violated at the end")
    return f"{metric.name} {verdict.upper()}: " + "; ".join(parts)


def _rejected(evidence: MetricEvidence | None) -> bool:
    return evidence is not None and any(test.rejected for test in evidence.tests)


def render_table(verdict: AnalysisVerdict) -> str:
    """A fixed-width table of the metric verdicts, followed by each metric's explanation."""
    header = (
        "metric",
        "verdict",
        "canary vs baseline",
        "confidence sequence",
        "e-value / needed",
        "points c/b",
        "intervals",
    )
    rows = [header]
    for metric in verdict.metrics:
        rows.append(
            (
                metric.name + (" (critical)" if metric.critical else ""),
                metric.verdict.upper(),
                format_ratio(metric.estimate),
                (
                    f"{format_ratio(metric.ci_low)}..{format_ratio(metric.ci_high)}"
                    if metric.ci_low is not None and metric.ci_high is not None
                    else "-"
                ),
                (
                    f"{format_e_value(metric.log_e_value)} / {math.exp(metric.log_threshold):.4g}"
                    if metric.log_e_value is not None and metric.log_threshold is not None
                    else "-"
                ),
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
        lines.extend(f"- {metric.explanation}" for metric in verdict.metrics)
    return "\n".join(lines)
