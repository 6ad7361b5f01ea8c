"""What the per-kind analyses hand back to the verdict logic (internal to the judge)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aicd.judge.model import TestResult
from aicd.judge.sequential import Band, SequenceResult

LOCATION_TEST = "location"
RATE_RATIO_TEST = "rate-ratio"
DISPERSION_TEST = "dispersion"


@dataclass(frozen=True)
class MetricEvidence:
    """Data counts and test results of one metric at one look."""

    tests: tuple[TestResult, ...]
    canary_samples: int  # usable points per side
    baseline_samples: int
    intervals: int  # intervals with data on both sides (the test's observations)
    no_data_share: float  # share of intervals without data on either side
    testable: bool  # enough paired data for the test to say anything
    canary_value: float | None = None  # a readable level per side (median, error ratio, rate)
    baseline_value: float | None = None
    detail: str = ""  # extra facts for the explanation ("12 vs 104 events", "exposure from weight")


def to_test_result(name: str, sequence: SequenceResult, band: Band, log_scale: bool = True) -> TestResult:
    """Map a log-scale (or relative-difference) sequence onto canary/baseline ratios."""

    def ratio(value: float | None) -> float | None:
        if value is None or not math.isfinite(value):
            return None
        return math.exp(value) if log_scale else 1.0 + value

    return TestResult(
        name=name,
        estimate=ratio(sequence.estimate),
        ci_low=ratio(sequence.ci_low),
        ci_high=ratio(sequence.ci_high),
        confidence=1.0 - math.exp(-sequence.log_threshold),
        allowed_low=ratio(band.low),
        allowed_high=ratio(band.high),
        log_e_value=_finite(sequence.log_e_value),
        log_threshold=sequence.log_threshold,
        rejected=sequence.rejected,
        observations=sequence.observations,
    )


def _finite(value: float) -> float:
    """Clamp so verdicts stay plain JSON (no inf/nan)."""
    if math.isnan(value):
        return 0.0
    return max(-1e6, min(1e6, value))
