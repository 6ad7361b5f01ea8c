"""The analysis step end to end against a real Prometheus (Debian's binary on a free loopback port,
1 s scrapes) scraping local exporters (the demo app) that serve stable and canary series: a healthy
canary passes, a canary with elevated errors fails and the delivery rolls back, a Prometheus stopped
mid-analysis makes the analysis inconclusive and the delivery pauses for a human."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.dev.loadgen import LoadGenerator
from aicd.dev.ports import free_port, wait_http_ok
from aicd.dev.processes import ManagedProcess
from aicd.dev.prometheus import EmbeddedPrometheus, find_prometheus
from aicd.messages import HumanAction, Trigger
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

__all__ = ["temporal_env"]

pytestmark = pytest.mark.skipif(find_prometheus() is None, reason="needs Debian's prometheus (scripts/setup.sh installs it)")

# (app label, track) -> error ratio of that exporter
EXPORTERS = {("healthy", "stable"): 0.0, ("healthy", "canary"): 0.0, ("broken", "stable"): 0.0, ("broken", "canary"): 0.4}


@pytest.fixture(scope="module")
def exporters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Demo-app processes serving stable and canary series under steady load; yields their host:port."""
    root = tmp_path_factory.mktemp("exporters")
    processes, addresses = [], []
    for (app, track), error_ratio in EXPORTERS.items():
        config = root / f"{app}-{track}.yaml"
        config.write_text(f"error_ratio: {error_ratio}\nadded_latency_ms: 2\n")
        port = free_port()
        argv = [sys.executable, "-m", "aicd.dev.demo_app", "--port", str(port), "--track", track,
                "--version", f"{app}-{track}", "--config", str(config), "--app", app]
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


def analysis_spec(tmp_path: Path, app: str, prometheus_url: str) -> tuple[dict, str, str]:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
    document = spec_document(
        app,
        source,
        gitops,
        {"web": {"kind": "git", "path": "web.yaml"}},
        [{"name": "prod", "targets": ["web"],
          "strategy": {"canary": {"steps": [{"setWeight": 50}, {"analysis": {"duration": "12s"}}, {"setWeight": 100}]}}}],
        analysis={
            "prometheus": {"url": prometheus_url},
            "interval": "3s",
            "metrics": [
                {"name": "error-rate", "kind": "count", "critical": True,
                 "query": f'sum(rate(http_requests_total{{app="{app}",track="{{{{ track }}}}",code=~"5.."}}[5s]))',
                 "total": f'sum(rate(http_requests_total{{app="{app}",track="{{{{ track }}}}"}}[5s]))'},
                {"name": "latency-p90", "kind": "continuous", "tolerance": "50%",
                 "query": f'histogram_quantile(0.9, sum by (le)(rate(http_request_duration_seconds_bucket{{app="{app}",track="{{{{ track }}}}"}}[5s])))'},
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
        healthy, healthy_gitops, revision = analysis_spec(tmp_path / "h", "healthy", prometheus.url)
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
    assert verdict is not None and verdict["outcome"] == "pass"
    assert {metric["name"]: metric["verdict"] for metric in verdict["metrics"]} == {"error-rate": "pass", "latency-p90": "pass"}
    assert "tag: " + good_plan.artifact_tag in show(healthy_gitops, "main", "web.yaml")

    assert bad.phase == "failed" and "analysis failed" in bad.reason and "error-rate" in bad.reason
    failed = bad_status.targets["web"].last_verdict
    assert failed is not None and failed["outcome"] == "fail"
    error_rate = next(metric for metric in failed["metrics"] if metric["name"] == "error-rate")
    assert error_rate["verdict"] == "fail" and error_rate["explanation"]
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
            await wait_for(client, plan.delivery_id, lambda s: "web" in s.targets and s.targets["web"].step_kind == "analysis")
            prometheus.stop()
            status = await wait_for(client, plan.delivery_id, lambda s: s.phase == "paused", timeout=90)
            assert status.targets["web"].state == "awaiting-resume"
            assert "inconclusive" in status.pause_reason
            assert status.targets["web"].last_verdict["outcome"] == "inconclusive"  # type: ignore[index]
            await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "no metrics"))
            result = await handle_for(client, plan.delivery_id).result()
    finally:
        prometheus.stop()
    assert result.phase == "aborted"
    steps = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert steps == ["prod/web/0-setWeight", "prod/web/rollback"]  # missing data never promoted
