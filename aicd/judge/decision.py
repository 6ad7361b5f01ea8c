"""The decision across looks: after each look of an analysis step, go on, pass, fail, or wait for a human.

A pure function of the look's verdict, the step's policy and the active time elapsed, so the workflow, the
benchmark and the tests share it and it is tested without Temporal.

* A metric that *fails at once* (a regression shown by an anytime-valid test, or a broken limit of a
  critical metric) fails the step at any look: the tests' error budget holds however often they look.
* Before the step's ``duration`` is over, the analysis goes on (``running``) whatever the evidence: the
  duration is the soak time a release engineer asked for, and a pass needs it.
* At the end: every metric shown within tolerance -> pass; a metric still failing (e.g. a non-critical
  limit still broken) -> fail; otherwise the evidence is inconclusive and ``onInconclusive`` decides:
  ``pause`` waits for a human (the default, as a human can weigh what the judge could not), ``fail`` fails
  the step, ``extend`` keeps looking every interval -- a pass or a failure ends it as soon as it is shown --
  until ``maxDuration``, then waits for a human.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum

from aicd.judge.model import AnalysisVerdict, OnInconclusive, Outcome

DEFAULT_EXTEND_FACTOR = 3.0  # `extend` without maxDuration looks up to three times the duration
_EPSILON_S = 1e-6


class Action(StrEnum):
    CONTINUE = "continue"  # look again after the next interval
    PASS = "pass"
    FAIL = "fail"
    WAIT_FOR_HUMAN = "wait-for-human"


@dataclass(frozen=True)
class AnalysisPolicy:
    """How long an analysis step looks and what it does with an inconclusive result."""

    duration_s: float
    interval_s: float
    on_inconclusive: OnInconclusive = OnInconclusive.PAUSE
    max_duration_s: float | None = None  # extend: look until then (default three times the duration)

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_inconclusive", OnInconclusive(self.on_inconclusive))
        if not (self.duration_s > 0 and self.interval_s > 0):
            raise ValueError("an analysis needs a positive duration and interval")
        if self.max_duration_s is not None and self.max_duration_s < self.duration_s:
            raise ValueError(
                f"maxDuration ({self.max_duration_s:g}s) must not be shorter than the duration ({self.duration_s:g}s)"
            )

    @property
    def horizon_s(self) -> float:
        """The longest the step may look: its duration, or how far `extend` may take it."""
        if self.on_inconclusive != OnInconclusive.EXTEND:
            return self.duration_s
        return (
            self.max_duration_s
            if self.max_duration_s is not None
            else DEFAULT_EXTEND_FACTOR * self.duration_s
        )


@dataclass(frozen=True)
class Decision:
    """What to do after a look. ``verdict`` is the look's verdict with the step's outcome (``running``
    while the analysis goes on); ``reason`` says why in plain words (empty while running)."""

    action: Action
    verdict: AnalysisVerdict
    reason: str = ""
    extended: bool = False  # looking past the duration because the evidence was inconclusive


def planned_intervals(policy: AnalysisPolicy) -> int:
    """How many intervals the step may last: the recent-window test spreads its error budget over them."""
    return max(1, math.ceil(policy.horizon_s / policy.interval_s - _EPSILON_S))


def next_look_in(policy: AnalysisPolicy, elapsed_s: float) -> float:
    """Seconds of active time until the next look: an interval, or what is left of the duration (or of
    the extension) if that is shorter, so the last look falls exactly at the end."""
    end = policy.duration_s if elapsed_s < policy.duration_s - _EPSILON_S else policy.horizon_s
    return max(0.0, min(policy.interval_s, end - elapsed_s))


def decide(verdict: AnalysisVerdict, policy: AnalysisPolicy, elapsed_s: float) -> Decision:
    """The step's next move after a look taken ``elapsed_s`` seconds of active time into it."""
    failing = [metric for metric in verdict.metrics if metric.fails_at_once]
    if failing:
        return Decision(Action.FAIL, _with(verdict, Outcome.FAIL), verdict.summary)
    if elapsed_s < policy.duration_s - _EPSILON_S:
        return Decision(Action.CONTINUE, _with(verdict, Outcome.RUNNING))
    extended = elapsed_s > policy.duration_s + _EPSILON_S
    if verdict.outcome == Outcome.FAIL:
        return Decision(Action.FAIL, verdict, verdict.summary, extended)
    if verdict.outcome == Outcome.PASS:
        return Decision(Action.PASS, verdict, verdict.summary, extended)
    inconclusive = _with(verdict, Outcome.INCONCLUSIVE)
    if policy.on_inconclusive == OnInconclusive.FAIL:
        reason = f"{verdict.summary} (onInconclusive: fail)"
        return Decision(Action.FAIL, inconclusive, reason, extended)
    if policy.on_inconclusive == OnInconclusive.EXTEND:
        if elapsed_s < policy.horizon_s - _EPSILON_S:
            return Decision(Action.CONTINUE, _with(verdict, Outcome.RUNNING), "", extended=True)
        reason = f"{verdict.summary} (looked until maxDuration)"
        return Decision(Action.WAIT_FOR_HUMAN, inconclusive, reason, extended)
    return Decision(Action.WAIT_FOR_HUMAN, inconclusive, verdict.summary, extended)


def _with(verdict: AnalysisVerdict, outcome: Outcome) -> AnalysisVerdict:
    return verdict if verdict.outcome == outcome else dataclasses.replace(verdict, outcome=outcome)
