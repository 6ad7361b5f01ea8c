"""aicd's canary judge: anytime-valid comparison of canary and baseline metrics (pure functions, no I/O).

``judge(...)`` takes every sample since the analysis started and returns an :class:`AnalysisVerdict`;
``render_table`` prints it. See :mod:`aicd.judge.sequential` for the statistics and
:mod:`aicd.judge.engine` for the decision rules.

Importing this package is cheap: the data types come from :mod:`aicd.judge.model` (plain Python), while
``judge`` and ``render_table`` -- which pull in numpy and scipy -- are imported on first use (PEP 562
module ``__getattr__``), so CLI commands that never judge do not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from aicd.judge.engine import judge
    from aicd.judge.explain import render_table

_LAZY = {"judge": "aicd.judge.engine", "render_table": "aicd.judge.explain"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
