"""Plain data types of the canary judge: inputs, configuration and verdicts.

Every type here is a frozen dataclass whose fields are str/float/int/bool/None, tuples of those, or
nested dataclasses, so Temporal's default JSON payload converter can carry them between workflow and
activities. Float fields that the judge fills are always finite (``None`` stands for "undefined"), so
the JSON stays standard. ``to_dict``/``from_dict`` round-trip the verdicts through plain dicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

KIND_COUNT = "count"
KIND_CONTINUOUS = "continuous"
KINDS = (KIND_COUNT, KIND_CONTINUOUS)

DIRECTION_INCREASE = "increase"
DIRECTION_DECREASE = "decrease"
DIRECTION_EITHER = "either"
DIRECTIONS = (DIRECTION_INCREASE, DIRECTION_DECREASE, DIRECTION_EITHER)

# Per-metric verdicts.
PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
NODATA = "nodata"
ERROR = "error"
METRIC_VERDICTS = (PASS, FAIL, INCONCLUSIVE, NODATA, ERROR)

# Overall outcomes: interim looks return RUNNING or FAIL; the final look PASS, FAIL or INCONCLUSIVE.
RUNNING = "running"
OUTCOMES = (RUNNING, PASS, FAIL, INCONCLUSIVE)


@dataclass(frozen=True)
class Series:
    """One time series: parallel tuples of unix timestamps (seconds) and values (NaN allowed)."""

    timestamps: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.timestamps) != len(self.values):
            raise ValueError(
                f"Series needs as many timestamps as values, got {len(self.timestamps)} and {len(self.values)}"
            )

    @classmethod
    def from_pairs(cls, pairs: Iterable[Sequence[Any]]) -> Series:
        """Build from ``[(timestamp, value), ...]``; values may be strings as Prometheus returns them."""
        timestamps: list[float] = []
        values: list[float] = []
        for pair in pairs:
            timestamps.append(float(pair[0]))
            values.append(_to_float(pair[1]))
        return cls(tuple(timestamps), tuple(values))

    @classmethod
    def from_lists(cls, timestamps: Iterable[float], values: Iterable[float]) -> Series:
        return cls(tuple(float(t) for t in timestamps), tuple(_to_float(v) for v in values))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def finite_count(self) -> int:
        """How many points carry a usable (finite) value."""
        return sum(1 for value in self.values if math.isfinite(value))

    def to_dict(self) -> dict[str, Any]:
        return {"timestamps": list(self.timestamps), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Series:
        return cls.from_lists(data.get("timestamps", ()), data.get("values", ()))


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class MetricSamples:
    """Everything known about one metric since the analysis started.

    ``canary_total``/``baseline_total`` are the exposure series of a ``count`` metric (e.g. all requests
    per second of each track) so that error *ratios* are compared when traffic is unequal. ``error`` is the
    provider's error message when this look's query failed.
    """

    canary: Series = field(default_factory=Series)
    baseline: Series = field(default_factory=Series)
    canary_total: Series | None = None
    baseline_total: Series | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "canary": self.canary.to_dict(),
            "baseline": self.baseline.to_dict(),
            "canary_total": None if self.canary_total is None else self.canary_total.to_dict(),
            "baseline_total": None if self.baseline_total is None else self.baseline_total.to_dict(),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricSamples:
        def optional(key: str) -> Series | None:
            value = data.get(key)
            return None if value is None else Series.from_dict(value)

        return cls(
            canary=Series.from_dict(data.get("canary") or {}),
            baseline=Series.from_dict(data.get("baseline") or {}),
            canary_total=optional("canary_total"),
            baseline_total=optional("baseline_total"),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class MetricConfig:
    """How one metric is judged.

    ``tolerance`` is the practical-significance floor, relative to the baseline: with 0.05 a canary up to
    5% worse than the baseline is acceptable. ``max``/``min`` are absolute limits on the canary's value
    (checked on the median of the most recent interval, so one bad scrape does not trip them).
    """

    name: str
    kind: str
    direction: str
    tolerance: float = 0.05
    max: float | None = None
    min: float | None = None
    critical: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("metric name must not be empty")
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"metric {self.name!r}: direction must be one of {DIRECTIONS}, got {self.direction!r}"
            )
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"metric {self.name!r}: tolerance must be a finite number >= 0")
        if self.direction != DIRECTION_INCREASE and self.tolerance >= 1:
            # A relative drop of 100% or more cannot happen, so the decrease side would never fail.
            raise ValueError(f"metric {self.name!r}: tolerance must be < 1 when decreases are bad")


@dataclass(frozen=True)
class JudgeConfig:
    """Error budget and data requirements of one analysis.

    ``alpha`` is the probability that an analysis of an unchanged canary fails at any look, across all
    metrics. ``no_data_limit`` is the share of intervals without data on either side (or failed queries)
    above which a metric is ``nodata``; ``min_samples`` the number of data points per side before a metric
    can pass.
    """

    alpha: float = 0.01
    no_data_limit: float = 0.5
    min_samples: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 <= self.no_data_limit <= 1:
            raise ValueError(f"no_data_limit must be in [0, 1], got {self.no_data_limit}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")


@dataclass(frozen=True)
class ThresholdCheck:
    """An absolute limit (``max`` or ``min``) checked on the canary's recent median."""

    bound: str
    limit: float
    observed: float | None
    violated: bool


@dataclass(frozen=True)
class TestResult:
    """One anytime-valid test of a metric.

    ``estimate`` is the canary/baseline ratio (1.0 == no change; for metrics that can be <= 0 it is
    1 + the relative difference). ``ci_low``/``ci_high`` are anytime-valid lower and upper confidence
    bounds on it, each holding at every look with probability >= ``confidence`` (``None``: too little data
    to bound yet). ``allowed_low``/``allowed_high`` bound the acceptable ratios (the tolerance band;
    ``None`` == a change that way is never bad). ``log_e_value`` is the log of the evidence against the
    band's edge on the bad side(s); the test rejects -- equivalently, the bound on the bad side lies beyond
    the band -- when it reaches ``log_threshold``: log(1/alpha_i), or log(2/alpha_i) per side for a metric
    judged in both directions.
    """

    __test__ = False  # not a pytest test class despite its name

    name: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    allowed_low: float | None
    allowed_high: float | None
    log_e_value: float
    log_threshold: float
    rejected: bool
    observations: int


@dataclass(frozen=True)
class MetricVerdict:
    """The judge's verdict on one metric with the numbers behind it."""

    name: str
    kind: str
    direction: str
    critical: bool
    verdict: str
    explanation: str
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    log_e_value: float | None = None
    log_threshold: float | None = None
    canary_samples: int = 0
    baseline_samples: int = 0
    intervals: int = 0
    no_data_share: float = 0.0
    canary_value: float | None = None
    baseline_value: float | None = None
    tests: tuple[TestResult, ...] = ()
    thresholds: tuple[ThresholdCheck, ...] = ()
    error: str | None = None

    @property
    def relative_change(self) -> float | None:
        """Canary vs baseline as a relative change (+0.12 == canary 12% higher)."""
        return None if self.estimate is None else self.estimate - 1.0

    @property
    def threshold_violated(self) -> bool:
        return any(check.violated for check in self.thresholds)

    @property
    def statistically_rejected(self) -> bool:
        return any(test.rejected for test in self.tests)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricVerdict:
        values = dict(data)
        values["tests"] = tuple(TestResult(**test) for test in values.get("tests", ()))
        values["thresholds"] = tuple(ThresholdCheck(**check) for check in values.get("thresholds", ()))
        return cls(**values)


@dataclass(frozen=True)
class AnalysisVerdict:
    """Overall outcome of one look: ``running``/``fail`` on interim looks, ``pass``/``fail``/``inconclusive``
    on the final one."""

    outcome: str
    metrics: tuple[MetricVerdict, ...]
    summary: str

    def metric(self, name: str) -> MetricVerdict:
        for verdict in self.metrics:
            if verdict.name == name:
                return verdict
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisVerdict:
        return cls(
            outcome=data["outcome"],
            metrics=tuple(MetricVerdict.from_dict(metric) for metric in data.get("metrics", ())),
            summary=data.get("summary", ""),
        )
