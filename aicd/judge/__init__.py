"""aicd's canary judge: anytime-valid comparison of canary and baseline metrics (pure functions, no I/O).

``judge(...)`` takes every sample since the analysis started and returns an :class:`AnalysisVerdict`;
``render_table`` prints it. See :mod:`aicd.judge.sequential` for the statistics and
:mod:`aicd.judge.engine` for the decision rules.
"""

from aicd.judge.engine import judge
from aicd.judge.explain import render_table
from aicd.judge.model import (
    DIRECTION_DECREASE,
    DIRECTION_EITHER,
    DIRECTION_INCREASE,
    ERROR,
    FAIL,
    INCONCLUSIVE,
    KIND_CONTINUOUS,
    KIND_COUNT,
    NODATA,
    PASS,
    RUNNING,
    AnalysisVerdict,
    JudgeConfig,
    MetricConfig,
    MetricSamples,
    MetricVerdict,
    Series,
    TestResult,
    ThresholdCheck,
)

__all__ = [
    "DIRECTION_DECREASE",
    "DIRECTION_EITHER",
    "DIRECTION_INCREASE",
    "ERROR",
    "FAIL",
    "INCONCLUSIVE",
    "KIND_CONTINUOUS",
    "KIND_COUNT",
    "NODATA",
    "PASS",
    "RUNNING",
    "AnalysisVerdict",
    "JudgeConfig",
    "MetricConfig",
    "MetricSamples",
    "MetricVerdict",
    "Series",
    "TestResult",
    "ThresholdCheck",
    "judge",
    "render_table",
]
