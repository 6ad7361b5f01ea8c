"""aicd's canary judge, a library in Kayenta's shape: data in, verdicts out, no I/O.

* :func:`judge` (``aicd.judge.engine``) takes every sample since the analysis started and the analysis
  configuration and returns an :class:`AnalysisVerdict`: per metric *pass* (shown within tolerance), *fail*
  (a regression beyond tolerance shown) or *inconclusive*, with a sentence people read.
* :func:`decide` (``aicd.judge.decision``) is the decision across looks: go on, pass, fail, extend or wait
  for a human. The workflow calls it after each look; the benchmark and the tests call it directly.
* Fetching lives elsewhere (``activities.analysis`` holds the Prometheus provider).

The statistics are in :mod:`aicd.judge.sequential` (anytime-valid confidence sequences), the per-kind
analyses in :mod:`aicd.judge.count` and :mod:`aicd.judge.continuous`, the words in :mod:`aicd.judge.explain`.

Importing this package is cheap: the data types come from :mod:`aicd.judge.model` and
:mod:`aicd.judge.decision` (plain Python), while ``judge`` and the renderers -- which pull in numpy and scipy
-- are imported on first use (PEP 562 module ``__getattr__``), so CLI commands that never judge do not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aicd.judge.decision import Action, AnalysisPolicy, Decision, decide, next_look_in, planned_intervals
from aicd.judge.model import (
    AnalysisVerdict,
    Direction,
    JudgeConfig,
    Kind,
    MetricConfig,
    MetricOutcome,
    MetricSamples,
    MetricVerdict,
    OnInconclusive,
    Outcome,
    Series,
    Statistic,
    TestName,
    TestResult,
    ThresholdCheck,
)

if TYPE_CHECKING:
    from aicd.judge.engine import judge
    from aicd.judge.explain import render_details, render_table

_LAZY = {
    "judge": "aicd.judge.engine",
    "render_table": "aicd.judge.explain",
    "render_details": "aicd.judge.explain",
}


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
    "Action",
    "AnalysisPolicy",
    "AnalysisVerdict",
    "Decision",
    "Direction",
    "JudgeConfig",
    "Kind",
    "MetricConfig",
    "MetricOutcome",
    "MetricSamples",
    "MetricVerdict",
    "OnInconclusive",
    "Outcome",
    "Series",
    "Statistic",
    "TestName",
    "TestResult",
    "ThresholdCheck",
    "decide",
    "judge",
    "next_look_in",
    "planned_intervals",
    "render_details",
    "render_table",
]
