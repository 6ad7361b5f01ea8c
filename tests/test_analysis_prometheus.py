"""The analysis step end to end against a real Prometheus (Debian's binary on a free loopback port,
1 s scrapes) scraping local exporters (the demo app) that serve stable and canary series: a healthy
canary is shown safe and passes, a canary with elevated errors fails and the delivery rolls back, a
Prometheus stopped mid-analysis makes the analysis inconclusive and the delivery pauses for a human, and
an inconclusive end follows the step's onInconclusive (fail, or extend up to maxDuration)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd.activities.analysis import fetch_samples
from aicd.activities.prometheus import PrometheusProvider
from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.dev.loadgen import LoadGenerator
from aicd.dev.ports import free_port, wait_http_ok
from aicd.dev.processes import ManagedProcess
from aicd.dev.prometheus import EmbeddedPrometheus, find_prometheus
from aicd.judge import (
    JudgeConfig,
    Kind,
    MetricConfig,
    MetricOutcome,
    MetricSamples,
    Outcome,
    TestName,
    judge,
)
from aicd.messages import HumanAction, Trigger
from aicd.plan import MetricPlan
from aicd.spec.model import PrometheusConfig
from aicd.testing.engine import (
    commits,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    temporal_env,
    wait_for,
)
from tests.conftest import RunAicd

__all__ = ["temporal_env"]

pytestmark = pytest.mark.skipif(
    find_prometheus() is None, reason="needs Debian's prometheus (scripts/setup.sh installs it)"
)

# (app label, track) -> error ratio of that exporter
EXPORTERS = {
    ("healthy", "stable"): 0.0,
    ("healthy", "canary"): 0.0,
    ("broken", "stable"): 0.0,
    ("broken", "canary"): 0.4,
}


@pytest.fixture(scope="module")
def exporters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Demo-app processes serving stable and canary series under steady load; yields their host:port."""
    root = tmp_path_factory.mktemp("exporters")
    processes, addresses = [], []
    for (app, track), error_ratio in EXPORTERS.items():
        config = root / f"{app}-{track}.yaml"
        config.write_text(f"error_ratio: {error_ratio}\nadded_latency_ms: 2\n")
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "aicd.dev.demo_app",
            "--port",
            str(port),
            "--track",
            track,
            "--version",
            f"{app}-{track}",
            "--config",
            str(config),
            "--app",
            app,
        ]
        processes.append(ManagedProcess(argv, root / f"{app}-{track}.log").start())
        addresses.append(f"127.0.0.1:{port}")
    try:
        for address in addresses:
            assert wait_http_ok(f"http://{address}/health", timeout=20), address
        with LoadGenerator([f"http://{address}" for address in addresses], rate=25):
            yield addresses
    finally:
        for process in processes:
            process.stop()


def analysis_spec(
    tmp_path: Path, app: str, prometheus_url: str, step: dict | None = None, latency_query: str | None = None
) -> tuple[dict, str, str]:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
    latency = latency_query or (
        f'histogram_quantile(0.9, sum by (le)(rate(http_request_duration_seconds_bucket{{app="{app}",track="{{{{ track }}}}"}}[5s])))'
    )
    document = spec_document(
        app,
        source,
        gitops,
        {"web": {"kind": "git", "path": "web.yaml"}},
        [
            {
                "name": "prod",
                "targets": ["web"],
                "strategy": {
                    "canary": {
                        "steps": [
                            {"setWeight": 50},
                            {"analysis": step or {"duration": "12s"}},
                            {"setWeight": 100},
                        ]
                    }
                },
            }
        ],
        analysis={
            "prometheus": {"url": prometheus_url},
            "interval": "3s",
            "metrics": [
                # No errors on either side is shown safe only with an absolute tolerance: the canary's error
                # ratio is shown below 5 points above the baseline's after a few hundred requests.
                {
                    "name": "error-rate",
                    "kind": "count",
                    "critical": True,
                    "absoluteTolerance": "5%",
                    "query": f'sum(rate(http_requests_total{{app="{app}",track="{{{{ track }}}}",code=~"5.."}}[5s]))',
                    "total": f'sum(rate(http_requests_total{{app="{app}",track="{{{{ track }}}}"}}[5s]))',
                },
                {"name": "latency-p90", "kind": "continuous", "tolerance": "50%", "query": latency},
            ],
        },
        rollback={"scope": "stage"},
    )
    return document, gitops, revision


def scraping(tmp_path: Path, addresses: list[str]) -> EmbeddedPrometheus:
    prometheus = EmbeddedPrometheus(tmp_path / "prometheus", scrape_interval="1s")
    prometheus.start()
    prometheus.set_targets(addresses)
    time.sleep(7)  # Prometheus hands new file_sd targets to the scraper at most every 5 s
    return prometheus


async def test_healthy_canary_passes_and_broken_canary_rolls_back(
    temporal_env: WorkflowEnvironment, exporters: list[str], tmp_path: Path
) -> None:
    prometheus = scraping(tmp_path, exporters)
    client = temporal_env.client
    try:
        # A busy machine can leave Prometheus a scrape short at the 12 s mark: the healthy canary then keeps
        # looking (extend) rather than wait for a human, and still has to be shown within tolerance.
        patient = {"duration": "12s", "onInconclusive": "extend", "maxDuration": "36s"}
        healthy, healthy_gitops, revision = analysis_spec(tmp_path / "h", "healthy", prometheus.url, patient)
        broken, broken_gitops, _ = analysis_spec(tmp_path / "b", "broken", prometheus.url)
        good_plan, bad_plan = plan_from(healthy, revision), plan_from(broken, revision)
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, good_plan, Trigger("cli", "t"), queue=queue)
            await start_delivery(client, bad_plan, Trigger("cli", "t"), queue=queue)
            good = await handle_for(client, good_plan.delivery_id).result()
            bad = await handle_for(client, bad_plan.delivery_id).result()
            good_status = await get_status(client, good_plan.delivery_id)
            bad_status = await get_status(client, bad_plan.delivery_id)
    finally:
        prometheus.stop()
    assert good.phase == "succeeded", good.reason
    verdict = good_status.targets["web"].last_verdict
    assert verdict is not None and verdict.outcome == Outcome.PASS, verdict
    assert {metric.name: metric.verdict for metric in verdict.metrics} == {
        "error-rate": MetricOutcome.PASS,
        "latency-p90": MetricOutcome.PASS,
    }
    assert "within tolerance" in verdict.metric("error-rate").explanation  # shown safe, not just "no failure"
    assert "tag: " + good_plan.artifact_tag in show(healthy_gitops, "main", "web.yaml")

    assert bad.phase == "failed" and "analysis failed" in bad.reason and "error-rate" in bad.reason
    assert "e-value" not in bad.reason and "fail:" not in bad.reason  # plain words for the on-call engineer
    failed = bad_status.targets["web"].last_verdict
    assert failed is not None and failed.outcome == Outcome.FAIL
    error_rate = failed.metric("error-rate")
    assert (
        error_rate.verdict == MetricOutcome.FAIL
        and error_rate.estimate is not None
        and error_rate.estimate > 2
    )
    steps = [entry["Aicd-Step"] for entry in commits(broken_gitops) if "Aicd-Step" in entry]
    assert steps == ["prod/web/0-setWeight", "prod/web/rollback"]  # never promoted past the failed analysis
    assert show(broken_gitops, "main", "web.yaml") == "image:\n  tag: v0"


async def test_stopped_prometheus_makes_analysis_inconclusive_and_pauses(
    temporal_env: WorkflowEnvironment, exporters: list[str], tmp_path: Path
) -> None:
    prometheus = scraping(tmp_path, exporters)
    document, gitops, revision = analysis_spec(tmp_path, "healthy", prometheus.url)
    plan = plan_from(document, revision)
    client = temporal_env.client
    try:
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
            await wait_for(
                client,
                plan.delivery_id,
                lambda s: "web" in s.targets and s.targets["web"].step_kind == "analysis",
            )
            prometheus.stop()
            status = await wait_for(client, plan.delivery_id, lambda s: s.phase == "paused", timeout=90)
            assert status.targets["web"].state == "awaiting-resume"
            assert "inconclusive" in status.pause_reason
            last = status.targets["web"].last_verdict
            assert last is not None and last.outcome == Outcome.INCONCLUSIVE
            assert "could not run" in status.pause_reason or "query failed" in status.pause_reason
            await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "no metrics"))
            result = await handle_for(client, plan.delivery_id).result()
    finally:
        prometheus.stop()
    assert result.phase == "aborted"
    steps = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert steps == ["prod/web/0-setWeight", "prod/web/rollback"]  # missing data never promoted


async def test_inconclusive_analysis_follows_on_inconclusive(
    temporal_env: WorkflowEnvironment, exporters: list[str], tmp_path: Path
) -> None:
    """A metric without data stays inconclusive: `onInconclusive: fail` rolls back at the end of the duration,
    `extend` keeps looking until maxDuration and then waits for a human."""
    prometheus = scraping(tmp_path, exporters)
    misspelt = 'histogram_quantile(0.9, sum by (le)(rate(http_request_duration_secnds_bucket{track="{{ track }}"}[5s])))'
    failing, failing_gitops, revision = analysis_spec(
        tmp_path / "f", "healthy", prometheus.url, {"duration": "6s", "onInconclusive": "fail"}, misspelt
    )
    extending, _, _ = analysis_spec(
        tmp_path / "e",
        "healthy",
        prometheus.url,
        {"duration": "6s", "onInconclusive": "extend", "maxDuration": "12s"},
        misspelt,
    )
    failing["metadata"]["name"] = "inconclusive-fails"
    extending["metadata"]["name"] = "inconclusive-extends"
    fail_plan, extend_plan = plan_from(failing, revision), plan_from(extending, revision)
    client = temporal_env.client
    try:
        async with running_worker(client, tmp_path / "state") as queue:
            await start_delivery(client, fail_plan, Trigger("cli", "t"), queue=queue)
            await start_delivery(client, extend_plan, Trigger("cli", "t"), queue=queue)
            failed = await handle_for(client, fail_plan.delivery_id).result()
            paused = await wait_for(
                client, extend_plan.delivery_id, lambda s: s.phase == "paused", timeout=90
            )
            looks = await analysis_looks(client, f"{extend_plan.delivery_id}--prod--web")
            await send_action(client, extend_plan.delivery_id, "abort", HumanAction("oncall", "no data"))
            await handle_for(client, extend_plan.delivery_id).result()
    finally:
        prometheus.stop()
    assert (
        failed.phase == "failed"
        and "analysis failed" in failed.reason
        and "onInconclusive: fail" in failed.reason
    )
    assert "latency-p90 has no data" in failed.reason
    steps = [entry["Aicd-Step"] for entry in commits(failing_gitops) if "Aicd-Step" in entry]
    assert steps == ["prod/web/0-setWeight", "prod/web/rollback"]
    assert "looked until maxDuration" in paused.pause_reason
    assert looks == 4  # 12 s of looking at 3 s intervals: twice the 6 s duration


async def analysis_looks(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == "analysis_look"
    )


def test_aicd_analyze_reads_like_the_status_and_keeps_the_statistics_for_details(
    exporters: list[str], tmp_path: Path, run_aicd: RunAicd
) -> None:
    """`aicd analyze` is one look of the same judge: the plain table and sentences by default, every test's
    bounds and evidence with --details, the whole verdict with --json; exit 1 unless it passes."""
    prometheus = scraping(tmp_path, exporters)
    try:
        time.sleep(6)  # a few seconds of both tracks in Prometheus
        document, _, _ = analysis_spec(tmp_path, "broken", prometheus.url)
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump(document))
        plain = run_aicd("analyze", str(spec), "--target", "web", "--since", "10s", "--weight", "50")
        details = run_aicd(
            "analyze", str(spec), "--target", "web", "--since", "10s", "--weight", "50", "--details"
        )
        as_json = run_aicd(
            "analyze", str(spec), "--target", "web", "--since", "10s", "--weight", "50", "--json"
        )
    finally:
        prometheus.stop()
    assert plain.returncode == 1, plain.stderr  # the broken canary's errors
    assert "analysis FAIL: error-rate on the canary is" in plain.stdout and "plausible range" in plain.stdout
    assert "e-value" not in plain.stdout
    assert details.returncode == 1 and "rate-ratio:" in details.stdout and "e-value" in details.stdout
    verdict = json.loads(as_json.stdout)
    assert verdict["outcome"] == "fail"
    error_rate = next(metric for metric in verdict["metrics"] if metric["name"] == "error-rate")
    assert (
        error_rate["verdict"] == "fail"
        and error_rate["tests"][0]["log_evidence"] >= error_rate["tests"][0]["log_threshold"]
    )


def test_a_metric_judged_per_pod_reads_the_baselines_pods_apart(exporters: list[str], tmp_path: Path) -> None:
    """The baseline of a per-pod metric is read once more ``by`` the pod label (here ``instance``: the two
    apps' stable exporters stand for two pods), one series per pod beside the usual aggregate, and the
    judge gets them; fetching stays apart from judging."""
    selector = 'http_request_duration_seconds_bucket{track="{{ track }}"}'
    metric = MetricPlan(
        MetricConfig("latency-p90", Kind.CONTINUOUS, per_pod=True),
        query=f"histogram_quantile(0.9, sum by (le)(rate({selector}[5s])))",
        pod_query=f"histogram_quantile(0.9, sum by (le, instance)(rate({selector}[5s])))",
        pod_label="instance",
    )
    prometheus = scraping(tmp_path, exporters)
    provider = PrometheusProvider(PrometheusConfig(url=prometheus.url))
    try:
        start = time.time() - 6
        samples = fetch_samples(provider, metric, start, time.time(), 1.0)
        deadline = time.monotonic() + 30
        while not _every_side_read(samples) and time.monotonic() < deadline:
            time.sleep(1)
            samples = fetch_samples(provider, metric, start, time.time(), 1.0)
        # The pods' query as the metric's own: a level summed over the baseline's pods would dwarf the
        # canary's; counts of events, though, add up over pods.
        by_instance = MetricPlan(MetricConfig("latency-p90", Kind.CONTINUOUS), query=metric.pod_query)
        unaggregated = fetch_samples(provider, by_instance, start, time.time(), 1.0)
        requests = 'rate(http_requests_total{track="{{ track }}"}[5s])'
        counted = fetch_samples(
            provider,
            MetricPlan(MetricConfig("requests", Kind.COUNT), query=requests),
            start,
            time.time(),
            1.0,
        )
    finally:
        provider.close()
        prometheus.stop()
    assert unaggregated.error is not None and "aggregate it" in unaggregated.error, unaggregated.error
    assert "2 series" in unaggregated.error and "instance=" in unaggregated.error
    assert counted.error is None and counted.canary.finite_count > 0
    assert samples.error is None
    assert len(samples.baseline_pods) == len(stable_addresses(exporters)) == 2
    assert all(pod.finite_count > 0 for pod in samples.baseline_pods)
    assert samples.canary.finite_count > 0 and samples.baseline.finite_count > 0
    verdict = judge({"latency-p90": samples}, JudgeConfig(metrics=(metric.config,), interval_s=3.0))
    assert TestName.PODS in {test.name for test in verdict.metric("latency-p90").tests}


def _every_side_read(samples: MetricSamples) -> bool:
    """Both tracks and both stable pods have points (Prometheus needs a few scrapes of a new target)."""
    series = (samples.canary, samples.baseline, *samples.baseline_pods)
    return len(samples.baseline_pods) >= 2 and all(side.finite_count > 0 for side in series)


def stable_addresses(addresses: list[str]) -> list[str]:
    """The stable exporters' addresses (the fixture starts them in EXPORTERS' order)."""
    return [address for address, (_, track) in zip(addresses, EXPORTERS, strict=True) if track == "stable"]
