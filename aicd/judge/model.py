"""Plain data types of the canary judge: closed vocabularies, inputs, configuration and verdicts.

Every type here is a frozen dataclass whose fields are str enums, str/float/int/bool/None, tuples of those,
or nested dataclasses, so Temporal's default JSON payload converter carries them between workflow and
activities (and old payloads with fields that no longer exist still decode: unknown keys are ignored).
Float fields the judge fills are always finite (``None`` stands for "undefined"), so the JSON stays
standard. Vocabularies (kind, direction, outcomes) are ``StrEnum``s parsed once where data enters: a
``MetricConfig`` built from a spec string converts it and names the metric when the string is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

_E = TypeVar("_E", bound=StrEnum)


class Kind(StrEnum):
    """``count``: events such as errors, compared as rates; ``continuous``: levels such as latency."""

    COUNT = "count"
    CONTINUOUS = "continuous"


class Direction(StrEnum):
    """Which change of the canary against the baseline is bad."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class MetricOutcome(StrEnum):
    """The judge's verdict on one metric at one look.

    ``pass``: shown to be within tolerance; ``fail``: a regression beyond tolerance is shown (or an absolute
    limit is broken); ``inconclusive``: neither yet; ``nodata``: too little data to judge; ``error``: the
    query failed at this look."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    NODATA = "nodata"
    ERROR = "error"


class Outcome(StrEnum):
    """Where an analysis stands: ``running`` while it goes on, then ``pass``, ``fail`` or ``inconclusive``.

    The judge reports the evidence as if the analysis ended now (pass, fail or inconclusive); the decision
    across looks (:mod:`aicd.judge.decision`) turns that into ``running`` until the analysis ends."""

    RUNNING = "running"
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class OnInconclusive(StrEnum):
    """What an analysis step does when its duration is over and some metric is neither shown safe nor
    failed: wait for a human (``pause``), fail the step (``fail``) or keep looking until ``maxDuration``
    (``extend``), then wait for a human."""

    PAUSE = "pause"
    FAIL = "fail"
    EXTEND = "extend"


class TestName(StrEnum):
    """The judge's tests. ``location``: the canary's level over the whole analysis (continuous metrics);
    ``rate-ratio``: the canary's event rate over the baseline's (counts); ``planned``: the same comparison
    as a fixed-sample test at this look, its share of the error budget spent over the planned looks;
    ``recent``: the same comparison on
    the most recent half of the analysis, which catches a regression that grows; ``dispersion``: a much
    noisier canary; ``absolute``: a count metric's event ratio difference (with ``absoluteTolerance``);
    ``pods``: the canary against the baseline's own pods (a metric judged per pod), whose spread between
    pods measures the noise one pod's series carries."""

    __test__ = False  # not a pytest test class despite its name

    LOCATION = "location"
    RATE_RATIO = "rate-ratio"
    PLANNED = "planned"
    RECENT = "recent"
    DISPERSION = "dispersion"
    ABSOLUTE = "absolute"
    PODS = "pods"


class Statistic(StrEnum):
    """How a test measures its evidence: an e-value (anytime-valid, any number of looks), a p-value (the
    planned-look and recent-window tests: fixed-sample, their error budget spent over the looks they may
    run at), or bounds (the absolute test: two tracks' confidence bounds set against the band)."""

    E_VALUE = "e-value"
    P_VALUE = "p-value"
    BOUNDS = "bounds"  # the absolute test compares two tracks' confidence bounds with the band


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
    provider's error message when this look's query failed. ``baseline_pods`` holds the baseline's series
    per pod (a metric judged per pod; empty otherwise), each as the query reads it for one pod.
    """

    canary: Series = field(default_factory=Series)
    baseline: Series = field(default_factory=Series)
    canary_total: Series | None = None
    baseline_total: Series | None = None
    error: str | None = None
    baseline_pods: tuple[Series, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "canary": self.canary.to_dict(),
            "baseline": self.baseline.to_dict(),
            "canary_total": None if self.canary_total is None else self.canary_total.to_dict(),
            "baseline_total": None if self.baseline_total is None else self.baseline_total.to_dict(),
            "error": self.error,
            "baseline_pods": [series.to_dict() for series in self.baseline_pods],
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
            baseline_pods=tuple(Series.from_dict(series) for series in data.get("baseline_pods") or ()),
        )


DEFAULT_TOLERANCE = 0.05
DEFAULT_ALPHA = 0.01
DEFAULT_NO_DATA_LIMIT = 0.5
DEFAULT_MIN_SAMPLES = 3


@dataclass(frozen=True)
class MetricConfig:
    """How one metric is judged.

    ``tolerance`` is the practical-significance floor, relative to the baseline: with 0.05 a canary up to
    5% worse than the baseline is acceptable. ``absolute_tolerance`` (count metrics with a total series
    only) widens that band by an absolute difference of event ratios -- 0.001 accepts a canary error ratio
    up to 0.1 percentage points above the baseline's -- so that a metric whose events are rare on both
    sides (no errors at all) can be shown safe. ``max``/``min`` are absolute limits on the canary's value,
    checked on the median of the most recent interval so one bad scrape does not trip them.
    ``interval_correlation`` (continuous metrics) is the lag-1 correlation of neighbouring intervals' canary-
    baseline differences assumed until the data can show it (``None``: the judge's default, see
    :mod:`aicd.judge.continuous`). ``per_pod`` (continuous metrics): the canary is also compared with the
    baseline's pods one by one (:mod:`aicd.judge.pods`), from the ``baseline_pods`` series of its samples.
    """

    name: str
    kind: Kind
    direction: Direction = Direction.INCREASE
    tolerance: float = DEFAULT_TOLERANCE
    absolute_tolerance: float = 0.0
    max: float | None = None
    min: float | None = None
    critical: bool = False
    interval_correlation: float | None = None
    per_pod: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("metric name must not be empty")
        object.__setattr__(self, "kind", _parse(Kind, self.kind, f"metric {self.name!r}: kind"))
        object.__setattr__(
            self, "direction", _parse(Direction, self.direction, f"metric {self.name!r}: direction")
        )
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"metric {self.name!r}: tolerance must be a finite number >= 0")
        if self.direction != Direction.INCREASE and self.tolerance >= 1:
            # A relative drop of 100% or more cannot happen, so the decrease side would never fail.
            raise ValueError(f"metric {self.name!r}: tolerance must be < 1 when decreases are bad")
        if not (math.isfinite(self.absolute_tolerance) and 0 <= self.absolute_tolerance < 1):
            raise ValueError(f"metric {self.name!r}: absolute tolerance must be in [0, 1)")
        if self.absolute_tolerance > 0 and self.kind != Kind.COUNT:
            raise ValueError(f"metric {self.name!r}: absolute tolerance applies to count metrics only")
        if self.interval_correlation is not None:
            if not (math.isfinite(self.interval_correlation) and 0 <= self.interval_correlation <= 0.95):
                raise ValueError(f"metric {self.name!r}: interval correlation must be in [0, 0.95]")
            if self.kind != Kind.CONTINUOUS:
                raise ValueError(
                    f"metric {self.name!r}: interval correlation applies to continuous metrics only"
                )
        if self.per_pod and self.kind != Kind.CONTINUOUS:
            raise ValueError(f"metric {self.name!r}: per-pod judging applies to continuous metrics only")


@dataclass(frozen=True)
class JudgeConfig:
    """The metrics of one analysis and its error budget and data requirements.

    ``alpha`` bounds both risks of the analysis: that a canary within tolerance on every metric fails (at
    any look, on any metric), and that a canary beyond tolerance on some metric passes. ``no_data_limit`` is
    the share of intervals without data on either side above which a metric is ``nodata``; ``min_samples``
    the data points per side a metric needs before it can pass. ``warmup_intervals`` leading intervals are
    left out of every test (cold caches, JIT). ``interval_s`` is the length of the intervals the series are
    cut into (``None``: five query steps, at least 30 s). ``planned_intervals`` is how many intervals the
    analysis may last (its duration, or ``maxDuration`` when it may extend): the recent-window test spreads
    its share of the error budget over them (``None``: as many as the data has, i.e. a single look).
    """

    metrics: tuple[MetricConfig, ...] = ()
    alpha: float = DEFAULT_ALPHA
    no_data_limit: float = DEFAULT_NO_DATA_LIMIT
    min_samples: int = DEFAULT_MIN_SAMPLES
    warmup_intervals: int = 0
    interval_s: float | None = None
    planned_intervals: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 <= self.no_data_limit <= 1:
            raise ValueError(f"no_data_limit must be in [0, 1], got {self.no_data_limit}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if self.warmup_intervals < 0:
            raise ValueError(f"warmup_intervals must be >= 0, got {self.warmup_intervals}")
        if self.planned_intervals is not None and self.planned_intervals < 1:
            raise ValueError(f"planned_intervals must be >= 1, got {self.planned_intervals}")
        names = [metric.name for metric in self.metrics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"metric names must be unique, repeated: {', '.join(duplicates)}")


@dataclass(frozen=True)
class ThresholdCheck:
    """An absolute limit (``max`` or ``min``) checked on the canary's recent median."""

    bound: str
    limit: float
    observed: float | None
    violated: bool


@dataclass(frozen=True)
class TestResult:
    """One test of a metric, on the canary/baseline ratio (1.0 == no change; for metrics that can be
    <= 0, 1 + the relative difference; for the ``absolute`` test, the canary's event ratio minus the
    baseline's scaled by 1 + tolerance, plus 1).

    ``ci_low``/``ci_high`` are the bounds the *fail* decision reads: each holds with probability >=
    ``confidence`` at every look at once (``None``: too little data to bound yet). ``safe_low``/
    ``safe_high`` are the bounds the *pass* decision reads, each at ``safe_confidence``. ``allowed_low``/
    ``allowed_high`` bound the acceptable values (the tolerance band; ``None`` == a change that way is
    never bad). ``log_evidence`` is the evidence against the band's edge on the bad side(s) -- the log of an
    e-value, or minus the log of a p-value -- and the test ``rejected`` (a regression) when it reaches
    ``log_threshold``; ``within`` means the safe bounds lie inside the band.
    """

    __test__ = False  # not a pytest test class despite its name

    name: TestName
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    allowed_low: float | None
    allowed_high: float | None
    statistic: Statistic
    log_evidence: float
    log_threshold: float
    rejected: bool
    observations: int
    safe_low: float | None = None
    safe_high: float | None = None
    safe_confidence: float | None = None
    within: bool = False


@dataclass(frozen=True)
class MetricVerdict:
    """The judge's verdict on one metric, the sentence that explains it and the numbers behind it.

    ``estimate``, ``ci_low``/``ci_high`` and ``safe_low``/``safe_high`` repeat the main test's (see
    :class:`TestResult`); ``regression``: a test showed a regression beyond tolerance (a count metric with an
    absolute tolerance needs its ratio and absolute tests to agree); ``settle`` says, for an inconclusive
    metric, what more data would decide it.
    """

    name: str
    kind: Kind
    direction: Direction
    critical: bool
    verdict: MetricOutcome
    explanation: str
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    safe_low: float | None = None
    safe_high: float | None = None
    canary_samples: int = 0
    baseline_samples: int = 0
    intervals: int = 0
    no_data_share: float = 0.0
    canary_value: float | None = None
    baseline_value: float | None = None
    tests: tuple[TestResult, ...] = ()
    thresholds: tuple[ThresholdCheck, ...] = ()
    error: str | None = None
    regression: bool = False  # a regression beyond tolerance shown by a test (not a broken limit)
    settle: str = ""
    detail: str = ""  # facts for the details view (event counts, exposure source, autocorrelation)

    @property
    def relative_change(self) -> float | None:
        """Canary vs baseline as a relative change (+0.12 == canary 12% higher)."""
        return None if self.estimate is None else self.estimate - 1.0

    @property
    def threshold_violated(self) -> bool:
        return any(check.violated for check in self.thresholds)

    @property
    def fails_at_once(self) -> bool:
        """A shown regression (valid at any look) or a broken limit of a critical metric; a broken limit of
        another metric is a point-in-time reading that fails the analysis only if it holds at the end.
        (Verdicts recorded before ``regression`` existed carry the same fact in their tests.)"""
        return (
            self.regression
            or any(test.rejected for test in self.tests)
            or (self.critical and self.threshold_violated)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricVerdict:
        known = {name for name in cls.__dataclass_fields__}
        values = {key: value for key, value in data.items() if key in known}
        values["tests"] = tuple(_test_from_dict(test) for test in values.get("tests", ()))
        values["thresholds"] = tuple(ThresholdCheck(**check) for check in values.get("thresholds", ()))
        values["kind"] = Kind(values["kind"])
        values["direction"] = Direction(values["direction"])
        values["verdict"] = MetricOutcome(values["verdict"])
        return cls(**values)


def _test_from_dict(data: Mapping[str, Any]) -> TestResult:
    known = {name for name in TestResult.__dataclass_fields__}
    values = {key: value for key, value in data.items() if key in known}
    values["name"] = TestName(values["name"])
    values["statistic"] = Statistic(values.get("statistic", Statistic.E_VALUE))
    return TestResult(**values)


@dataclass(frozen=True)
class AnalysisVerdict:
    """One look of an analysis: the metric verdicts, the overall outcome and a plain-words summary.

    From :func:`aicd.judge.judge` the outcome is the evidence as if the analysis ended now: ``fail`` when a
    metric failed, ``pass`` when every metric was shown within tolerance, else ``inconclusive``. The
    decision across looks replaces it with ``running`` while the analysis goes on.
    """

    outcome: Outcome
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
            outcome=Outcome(data["outcome"]),
            metrics=tuple(MetricVerdict.from_dict(metric) for metric in data.get("metrics", ())),
            summary=data.get("summary", ""),
        )


def _parse(enum: type[_E], value: Any, where: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise ValueError(f"{where} must be one of {choices}, got {value!r}") from None
