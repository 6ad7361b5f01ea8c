"""The pieces that translate an Argo Rollouts AnalysisTemplate metric: the track label added to every series
selector of its PromQL (and nothing else changed), its successCondition/failureCondition read as the canary's
floor and ceiling (or refused by name), and a template's args, durations and providers."""

from __future__ import annotations

from typing import Any

import pytest

from aicd.argo_rollouts.conditions import ConditionError, limits, parse_condition
from aicd.argo_rollouts.templates import Catalog, translate_step
from aicd.promql import PromQLError, inject_label, selector_count

T = 'track="{{ track }}"'


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("up", f"up{{{T}}}"),
        ('rate(x_total{code=~"5.."}[1m])', f'rate(x_total{{code=~"5..",{T}}}[1m])'),
        ("sum by (le) (rate(h_bucket[5m]))", f"sum by (le) (rate(h_bucket{{{T}}}[5m]))"),
        ("sum(rate(a[1m])) by (job) / sum(rate(b[1m])) by (job)", f"sum(rate(a{{{T}}}[1m])) by (job) / sum(rate(b{{{T}}}[1m])) by (job)"),
        ("a / on(instance) group_left(name) b", f"a{{{T}}} / on(instance) group_left(name) b{{{T}}}"),
        ('{__name__=~"job:.*"}', f'{{__name__=~"job:.*",{T}}}'),
        ('x{a="{b}", c="d,e"}', f'x{{a="{{b}}", c="d,e",{T}}}'),  # braces and commas inside strings
        ('x{track="canary"}', 'x{track="canary"}'),  # already chooses a track: left alone
        ("histogram_quantile(0.99, sum(rate(h_bucket{le!=\"\"}[1m])) by (le))", f'histogram_quantile(0.99, sum(rate(h_bucket{{le!="",{T}}}[1m])) by (le))'),
        ("max_over_time(x[5m:30s]) offset 1h", f"max_over_time(x{{{T}}}[5m:30s]) offset 1h"),
        ("a and b or c unless d", f"a{{{T}}} and b{{{T}}} or c{{{T}}} unless d{{{T}}}"),
        ("1 - x # a comment naming y\n", f"1 - x{{{T}}} # a comment naming y\n"),
    ],
)  # fmt: skip
def test_the_track_label_is_added_to_every_selector_and_nothing_else(query: str, expected: str) -> None:
    assert inject_label(query, "track", "{{ track }}") == expected


def test_unreadable_queries_and_constants_are_told_apart() -> None:
    with pytest.raises(PromQLError, match="unclosed"):
        inject_label('x{a="b}', "track", "c")
    with pytest.raises(PromQLError, match="unclosed"):
        inject_label("rate(x[1m)", "track", "c")
    assert selector_count("vector(1)") == 0 and selector_count("scalar(2) * 3") == 0
    assert selector_count("sum(x)") == 1 and selector_count("a / on(instance) group_left(name) b") == 2


@pytest.mark.parametrize(
    ("success", "failure", "low", "high"),
    [
        ("result[0] >= 0.95", None, 0.95, None),
        ("result >= 0.95", None, 0.95, None),
        ("asFloat(result[0]) < 500", None, None, 500.0),
        ("0.9 <= result[0]", None, 0.9, None),  # the number on the left
        ("all(result, # < 1000)", None, None, 1000.0),
        ("all(result, {# < 1000})", None, None, 1000.0),
        ("result[0] >= 0 && result[0] <= 0.8", None, 0.0, 0.8),
        ("len(result) == 0 || result[0] >= 0.99", None, 0.99, None),  # the no-data guard is the judge's rule
        (None, "default(result[0], 0) > 0.05", None, 0.05),
        (None, "result[0] > 0.05", None, 0.05),
        (None, "result[0] < 0.9", 0.9, None),
        ("result[0] < 0.01", "result[0] > 0.05", None, 0.05),  # both: the failure side is the limit
        (None, None, None, None),
    ],
)
def test_conditions_become_the_canarys_floor_and_ceiling(
    success: str | None, failure: str | None, low: float | None, high: float | None
) -> None:
    found = limits(success, failure, failure_limit=0)
    assert (found.min, found.max) == (low, high)
    assert found.notes  # every translation says what the judge does instead


@pytest.mark.parametrize(
    ("condition", "why"),
    [
        ("result[0] == 1", "tests equality"),
        ("result[0] > 1 || result[0] < 0", "joins two comparisons with ||"),
        ("result[0] * 100 > 5", "is not one"),
        ("result.ok == true", "is not one"),
        ("result[0] > 1 && result[0] > 2", "sets two min limits"),
    ],
)
def test_conditions_aicd_cannot_check_are_refused_by_name(condition: str, why: str) -> None:
    with pytest.raises(ConditionError, match=why):
        limits(condition, None, failure_limit=0)


def test_no_data_guards_are_noted_not_dropped() -> None:
    comparisons, guarded = parse_condition("isNaN(result[0]) || result[0] < 3")
    assert (comparisons, guarded) == (parse_condition("result[0] < 3")[0], True)
    for condition in ("isNaN(result[0]) || result[0] > 3", "default(result[0], 0) > 3"):
        notes = limits(None, condition, failure_limit=0).notes
        assert any("never passes on missing data" in note for note in notes), condition


TEMPLATE = b"""\
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: errors}
spec:
  args:
  - name: app
  - name: window
    value: 1m
  metrics:
  - name: errors
    initialDelay: 30s
    interval: 1m
    count: 4
    failureLimit: 1
    failureCondition: result[0] > 2
    provider:
      prometheus:
        query: sum(rate(errors_total{app="{{args.app}}"}[{{args.window}}]))
"""


def catalog(raw: bytes = TEMPLATE) -> Catalog:
    found = Catalog()
    found.files.append("t.yaml")
    found.add("t.yaml", raw)
    assert not found.errors, found.errors
    return found


def test_a_template_metric_becomes_an_aicd_metric_timed_like_argo() -> None:
    step = {"templates": [{"templateName": "errors"}], "args": [{"name": "app", "value": "shop"}]}
    result = translate_step(step, ("step",), catalog())
    assert not result.findings and not result.errors
    (metric,) = result.metrics
    assert metric.metric == {
        "name": "errors",
        "query": 'sum(rate(errors_total{app="shop",track="{{ track }}"}[1m]))',
        "kind": "continuous",
        "direction": "increase",
        "max": 2.0,  # failureLimit 1: not critical
    }
    assert result.duration_s == 30 + 4 * 60  # initialDelay + count x interval
    assert metric.origin == "t.yaml:10"


def _translated(query: str) -> Any:
    raw = TEMPLATE.replace(b'sum(rate(errors_total{app="{{args.app}}"}[{{args.window}}]))', query.encode())
    step = {"templates": [{"templateName": "errors"}], "args": [{"name": "app", "value": "shop"}]}
    return translate_step(step, ("step",), catalog(raw))


def test_the_track_placeholder_on_one_selector_is_added_to_the_others() -> None:
    """Before, a query naming {{ track }} anywhere was left as it was: its denominator read the whole service."""
    result = _translated('sum(rate(errors_total{track="{{ track }}"}[1m])) / sum(rate(requests_total[1m]))')
    assert not result.errors and not result.findings, (result.errors, result.findings)
    (metric,) = result.metrics
    assert (
        metric.metric["query"] == f"sum(rate(errors_total{{{T}}}[1m])) / sum(rate(requests_total{{{T}}}[1m]))"
    )
    assert any("told apart" in note and "on every selector" in note for note in metric.notes), metric.notes


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ('sum(rate(errors_total{track="canary"}[1m]))', 'errors_total{track="canary"} matches'),
        (
            'sum(rate(errors_total[1m])) / sum(rate(requests_total{track="stable"}[1m]))',
            'requests_total{track="stable"} matches',
        ),
    ],
)
def test_a_selector_that_chooses_a_track_of_its_own_is_refused(query: str, named: str) -> None:
    """Canary and stable would read the same series there: with every selector, the judge compares a track
    with itself and passes; with one (a ratio's denominator), the canary's errors are divided by stable's
    traffic."""
    result = _translated(query)
    (error,) = result.errors
    assert (error.file, error.line) == ("t.yaml", 18), error
    assert f"{named} on track already, so canary and stable would read the same series" in error.message
    assert result.metrics == []


def test_args_from_the_cluster_and_missing_args_are_refused_where_they_are() -> None:
    missing = translate_step({"templates": [{"templateName": "errors"}]}, ("step",), catalog())
    assert missing.metrics == [] and [path for path, _ in missing.findings] == [("step", "args")]
    assert "needs arg 'app' (t.yaml:18)" in missing.findings[0][1]
    cluster = translate_step(
        {"templates": [{"templateName": "errors"}], "args": [{"name": "app", "valueFrom": {"fieldRef": {}}}]},
        ("step",),
        catalog(),
    )
    (error,) = cluster.errors
    assert (error.file, error.line) == ("t.yaml", 18) and "takes its value from the cluster" in error.message


def test_a_template_twice_in_the_files_is_an_error_naming_both() -> None:
    twice = Catalog()
    twice.add("t.yaml", TEMPLATE + b"---\n" + TEMPLATE)
    (error,) = twice.errors
    assert error.line == 22 and "AnalysisTemplate errors is also defined at t.yaml:1" in error.message
