"""The analysis settings from spec to plan: every setting that matters reaches the judge and the decision
across looks, the schema documents every property, and secrets can only be named, never written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from aicd.judge import Kind, OnInconclusive, planned_intervals
from aicd.plan import build_plan
from aicd.spec.loader import parse_spec_bytes
from aicd.spec.model import SecretSource
from tests.helpers_spec import MINIMAL, REPO_ROOT

SCHEMA = REPO_ROOT / "schemas" / "delivery-spec.v1alpha1.json"
REVISION = "4f2c1d9e" * 5


def properties(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named property of the schema, with its JSON path."""
    if isinstance(node, dict):
        for name, value in node.get("properties", {}).items():
            yield f"{path}.{name}", value
        for key, value in node.items():
            if key != "if":  # conditions name properties, they do not define them
                yield from properties(value, f"{path}.{key}" if key != "properties" else path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from properties(value, f"{path}[{index}]")


def test_every_schema_property_has_a_description() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    missing = sorted({path for path, value in properties(schema) if "description" not in value})
    assert missing == []
    assert len(list(properties(schema))) > 90  # the walk reaches the nested definitions


def document(**analysis: Any) -> dict[str, Any]:
    spec = yaml.safe_load(MINIMAL.read_bytes())
    spec["spec"]["analysis"].update(analysis)
    return spec


def parse(spec: dict[str, Any]) -> tuple[Any, list[str]]:
    model, errors = parse_spec_bytes(yaml.safe_dump(spec).encode(), "spec.yaml")
    return model, [str(error) for error in errors]


def test_every_analysis_setting_reaches_the_plan() -> None:
    spec = document(
        prometheus={
            "url": "https://mimir.example.com/prometheus/",
            "timeout": "20s",
            "headers": {"X-Scope-OrgID": "payments"},
            "auth": {"basic": {"username": "1234", "password": {"env": "GRAFANA_CLOUD_TOKEN"}}},
            "caCert": "/etc/aicd/ca.pem",
        },
        interval="1m",
        alpha=0.02,
        noDataLimit="30%",
        minSamples=5,
        warmupIntervals=2,
        metrics=[
            {
                "name": "errors",
                "kind": "count",
                "query": 'sum(rate(errors_total{track="{{ track }}"}[1m]))',
                "total": 'sum(rate(requests_total{track="{{ track }}"}[1m]))',
                "tolerance": "20%",
                "absoluteTolerance": "0.1%",
            }
        ],
    )
    steps = spec["spec"]["stages"][1]["strategy"]["canary"]["steps"]
    steps[1] = {"analysis": {"duration": "10m", "onInconclusive": "extend", "maxDuration": "30m"}}
    model, errors = parse(spec)
    assert errors == []
    plan = build_plan(model, REVISION)
    analysis = plan.analysis
    assert analysis is not None and analysis.prometheus is not None
    connection = analysis.connection
    assert connection.url == "https://mimir.example.com/prometheus" and connection.timeout_s == 20.0
    assert connection.headers == {"X-Scope-OrgID": "payments"} and connection.ca_cert == "/etc/aicd/ca.pem"
    assert connection.basic_username == "1234"
    assert connection.basic_password == SecretSource(env="GRAFANA_CLOUD_TOKEN")
    assert not connection.insecure
    step = plan.stages[1].steps[1]
    assert step.on_inconclusive == OnInconclusive.EXTEND and step.max_duration_s == 1800.0
    policy = step.policy(analysis.interval_s)
    assert planned_intervals(policy) == 30
    config = analysis.judge_config([], planned_intervals(policy))
    assert (config.alpha, config.no_data_limit, config.min_samples, config.warmup_intervals) == (
        0.02,
        0.3,
        5,
        2,
    )
    assert config.interval_s == 60.0 and config.planned_intervals == 30
    (metric,) = config.metrics
    assert metric.kind == Kind.COUNT and metric.tolerance == 0.2 and metric.absolute_tolerance == 0.001
    assert "if inconclusive, looks on up to 30m" in step.describe()
    # The plan, as Temporal carries it, holds only where the password is, never a password.
    assert "GRAFANA_CLOUD_TOKEN" in json.dumps(plan.to_dict()) and "password" in json.dumps(plan.to_dict())


def test_defaults_keep_todays_behaviour() -> None:
    model, errors = parse(document())
    assert errors == []
    plan = build_plan(model, REVISION)
    assert plan.analysis is not None
    step = plan.stages[1].steps[1]
    assert step.on_inconclusive == OnInconclusive.PAUSE and step.max_duration_s is None
    connection = plan.analysis.connection
    assert connection.timeout_s == 10.0 and not connection.insecure and connection.ca_cert is None
    assert step.describe() == "analysis 1m"


def test_a_secret_cannot_be_written_into_the_spec() -> None:
    for auth in (
        {"bearer": "eyJhbGciOi"},
        {"basic": {"username": "u", "password": "hunter2"}},
        {"bearer": {}},
    ):
        _, errors = parse(document(prometheus={"url": "https://p:9090", "auth": auth}))
        assert errors and all("prometheus.auth" in error for error in errors), errors


def test_bad_analysis_settings_are_refused_with_their_place() -> None:
    spec = document()
    spec["spec"]["stages"][1]["strategy"]["canary"]["steps"][1] = {"analysis": {"onInconclusive": "retry"}}
    _, errors = parse(spec)
    assert len(errors) == 1 and "steps[1].analysis.onInconclusive" in errors[0]
    _, errors = parse(document(minSamples=0))
    assert len(errors) == 1 and "$.spec.analysis.minSamples" in errors[0]


def test_interval_correlation_reaches_the_judge_and_is_refused_where_it_means_nothing() -> None:
    latency = {"name": "latency", "kind": "continuous", "query": 'p95{track="{{ track }}"}'}
    model, errors = parse(
        document(metrics=[{**latency, "intervalCorrelation": 0.6}, {**latency, "name": "b"}])
    )
    assert errors == []
    analysis = build_plan(model, REVISION).analysis
    assert analysis is not None
    stated, default = analysis.judge_config([], None).metrics
    assert stated.interval_correlation == 0.6 and default.interval_correlation is None
    _, errors = parse(document(metrics=[{**latency, "name": "a", "intervalCorrelation": 0.99}]))
    assert len(errors) == 1 and "$.spec.analysis.metrics[0].intervalCorrelation" in errors[0]
    errors_query = 'errors{track="{{ track }}"}'
    count = {"name": "errors", "kind": "count", "query": errors_query, "intervalCorrelation": 0.3}
    _, errors = parse(document(metrics=[latency, count]))
    assert len(errors) == 1 and "metrics[1].intervalCorrelation" in errors[0], errors
    assert "continuous metrics" in errors[0]


def test_per_pod_judging_reaches_the_plan_and_is_refused_where_it_means_nothing() -> None:
    latency = {"name": "latency", "kind": "continuous", "query": 'p95{track="{{ track }}"}'}
    by_pod = 'histogram_quantile(0.95, sum by (le, instance)(rate(x_bucket{track="{{ track }}"}[1m])))'
    model, errors = parse(
        document(
            metrics=[
                {**latency, "perPod": {"label": "instance", "query": by_pod}},
                {**latency, "name": "memory", "perPod": {}},
                {**latency, "name": "plain"},
            ]
        )
    )
    assert errors == []
    analysis = build_plan(model, REVISION).analysis
    assert analysis is not None
    stated, defaults, plain = analysis.metrics
    assert stated.config.per_pod and (stated.pod_query, stated.pod_label) == (by_pod, "instance")
    assert defaults.config.per_pod and (defaults.pod_query, defaults.pod_label) == (latency["query"], "pod")
    assert not plain.config.per_pod and plain.pod_query is None
    assert [metric.per_pod for metric in analysis.judge_config([], None).metrics] == [True, True, False]
    count = {"name": "errors", "kind": "count", "query": 'errors{track="{{ track }}"}', "perPod": {}}
    _, errors = parse(document(metrics=[latency, count]))
    assert len(errors) == 1 and "metrics[1].perPod" in errors[0] and "continuous metrics" in errors[0], errors
    _, errors = parse(document(metrics=[{**latency, "perPod": {"query": "sum by (pod)(x)"}}]))
    assert len(errors) == 1 and "metrics[0].perPod.query" in errors[0] and "{{ track }}" in errors[0], errors
    _, errors = parse(document(metrics=[{**latency, "perPod": {"label": "not a label"}}]))
    assert len(errors) == 1 and "metrics[0].perPod.label" in errors[0], errors


def test_every_query_of_a_metric_must_read_one_track() -> None:
    """A label named like the placeholder is not the placeholder; a `total` over the whole service would make a
    canary's errors look rare next to its share of the traffic."""
    errors_query = 'sum(rate(errors_total{track="{{ track }}"}[1m]))'
    whole_service = 'sum(rate(requests_total{job="tracking"}[1m]))'
    tracked_total = 'sum(rate(requests_total{track="{{ track }}"}[1m]))'
    count = {"name": "errors", "kind": "count", "query": errors_query, "total": whole_service}
    _, errors = parse(document(metrics=[count]))
    assert len(errors) == 1 and "metrics[0].total" in errors[0] and "{{ track }}" in errors[0], errors
    lookalike = {
        "name": "latency",
        "kind": "continuous",
        "query": 'p95{job="tracking",target="{{ target }}"}',
    }
    _, errors = parse(document(metrics=[lookalike]))
    assert len(errors) == 1 and "metrics[0].query" in errors[0] and "told apart" in errors[0], errors
    _, errors = parse(document(metrics=[{**count, "total": tracked_total}]))
    assert errors == []


def test_every_series_selector_of_a_query_must_choose_its_track() -> None:
    """A ratio whose denominator reads the whole service divides the canary's errors by everyone's traffic: at
    10% weight a canary with 5 times the baseline's error rate reads about half of it, and passes."""
    ratio = {
        "name": "error-ratio",
        "kind": "continuous",
        "query": 'sum(rate(errors_total{track="{{ track }}"}[1m])) / sum(rate(requests_total{job="web"}[1m]))',
    }
    _, errors = parse(document(metrics=[ratio]))
    assert len(errors) == 1 and "metrics[0].query" in errors[0], errors
    assert 'requests_total{job="web"} does not match on {{ track }}' in errors[0], errors
    count = {
        "name": "errors",
        "kind": "count",
        "query": 'sum(increase(errors_total{track="{{ track }}"}[1m]))',
        "total": 'sum(increase(requests_total{track="{{ track }}"}[1m])) + sum(increase(retries_total[1m]))',
    }
    _, errors = parse(document(metrics=[count]))
    assert len(errors) == 1 and "metrics[0].total" in errors[0] and "retries_total does not" in errors[0], (
        errors
    )
    tracked = ratio["query"].replace('{job="web"}', '{job="web",track="{{ track }}"}')
    _, errors = parse(document(metrics=[{**ratio, "query": tracked}]))
    assert errors == [], errors
    per_pod = {
        "name": "latency",
        "kind": "continuous",
        "query": 'max(p95_seconds{track="{{ track }}"})',
        "perPod": {"query": 'max by (pod)(p95_seconds{track="{{ track }}"}) / max by (pod)(p95_seconds)'},
    }
    _, errors = parse(document(metrics=[per_pod]))
    assert len(errors) == 1 and "metrics[0].perPod.query" in errors[0], errors
    assert "p95_seconds does not match on {{ track }}" in errors[0], errors
    # A join may choose the track: the metric itself carries no track label, the pods' labels do.
    joined = 'sum(rate(x_total[1m]) * on(pod) group_left kube_pod_labels{label_track="{{ track }}"})'
    _, errors = parse(document(metrics=[{**ratio, "query": joined}]))
    assert errors == [], errors
    # ... but a join named only in a comment or a string is none.
    commented = ratio["query"] + "  # not joined: on(pod) group_left"
    _, errors = parse(document(metrics=[{**ratio, "query": commented}]))
    assert len(errors) == 1 and 'requests_total{job="web"} does not match' in errors[0], errors
