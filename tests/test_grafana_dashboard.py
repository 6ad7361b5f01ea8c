"""The Grafana dashboard and the alert rules, judged against real data: the embedded stack runs deliveries - a
good release through canary analysis, a fleet and a stage, a bad one whose analysis fails and rolls back,
webhooks through the gateway (some refused) - while the embedded Prometheus scrapes the worker (`aicd worker
--metrics-port`) and the gateway (`aicd serve`) and evaluates the rules. Then every dashboard panel's query
must return data, every rule's expression must evaluate, the rollback alert must be firing for the bad app,
and the worker-not-polling expression must find the worker once it is stopped. A panel or rule that names a
series nobody exports fails here instead of rotting silently."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from aicd.client import handle_for
from aicd.dev.loadgen import LoadGenerator
from aicd.dev.ports import free_port, wait_http_ok
from aicd.dev.processes import ManagedProcess
from aicd.dev.prometheus import EmbeddedPrometheus, find_prometheus
from aicd.gateway.signatures import sign_github
from aicd.testing.engine import branch_at, make_repo, spec_document, temporal_env
from tests.conftest import REPO_ROOT, aicd_env
from tests.test_edge_fleet import HealthServer

__all__ = ["temporal_env"]

pytestmark = [
    pytest.mark.skipif(
        find_prometheus() is None, reason="needs Debian's prometheus (scripts/setup.sh installs it)"
    ),
    pytest.mark.timeout(600),
]

MONITORING = REPO_ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "aicd-dashboard.json"
RULES = MONITORING / "aicd-rules.yaml"
GITHUB_SECRET = "gh-" + uuid.uuid4().hex
# Grafana's variables, as a dashboard user with every app selected would have them.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "5s", "${app:regex}": ".*", "$app": ".*"}
EXPORTERS = {("good", "stable"): 0.0, ("good", "canary"): 0.0, ("bad", "stable"): 0.0, ("bad", "canary"): 0.4}


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, rows' nested panels included, and of every
    annotation."""
    found = [
        (f"annotation {item['name']}", item["expr"])
        for item in dashboard["annotations"]["list"]
        if "expr" in item
    ]
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels", [])
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def grafana_expanded(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def rule_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


class Prom:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10.0, trust_env=False)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.http.get("/api/v1/query", params={"query": expr}).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        answer = self.http.get(
            "/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": "1s"}
        ).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def firing(self, alert: str) -> list[dict[str, str]]:
        alerts = self.http.get("/api/v1/alerts").json()["data"]["alerts"]
        return [
            entry["labels"]
            for entry in alerts
            if entry["labels"]["alertname"] == alert and entry["state"] == "firing"
        ]

    def until(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


@pytest.fixture(scope="module")
def exporters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, dict[str, str]]]]:
    """Demo-app processes serving stable and canary series under steady load."""
    root = tmp_path_factory.mktemp("exporters")
    processes, targets = [], []
    for (app, track), error_ratio in EXPORTERS.items():
        config = root / f"{app}-{track}.yaml"
        config.write_text(f"error_ratio: {error_ratio}\nadded_latency_ms: 2\n")
        port = free_port()
        argv = [sys.executable, "-m", "aicd.dev.demo_app", "--port", str(port), "--track", track,
                "--version", f"{app}-{track}", "--config", str(config), "--app", app]  # fmt: skip
        processes.append(ManagedProcess(argv, root / f"{app}-{track}.log").start())
        targets.append((f"127.0.0.1:{port}", {"job": "demo-app"}))
    try:
        for address, _labels in targets:
            assert wait_http_ok(f"http://{address}/health", timeout=20), address
        with LoadGenerator([f"http://{address}" for address, _ in targets], rate=25):
            yield targets
    finally:
        for process in processes:
            process.stop()


def app_document(
    tmp_path: Path, app: str, prometheus: str, health_url: str
) -> tuple[dict[str, Any], str, str]:
    """A spec whose canary is judged on the demo app's `app` series; the good app also has an edge fleet
    of two sites, one of them unhealthy (within its failure budget)."""
    source, revision = make_repo(tmp_path, f"{app}-source", {"README": f"{uuid.uuid4()}\n"})
    files = {"web.yaml": "image:\n  tag: v0\ncanary:\n  weight: 0\n"}
    sites = ["pop-1", "pop-2"]
    files["fleets/edge.yaml"] = "".join(
        f"- {{name: {site}, health: '{health_url}/healthz/{site}'}}\n" for site in sites
    )
    files.update({f"edge/{site}/values.yaml": "image:\n  tag: v0\n" for site in sites})
    gitops, _ = make_repo(tmp_path, f"{app}-gitops", files)
    query = 'sum(rate(http_requests_total{app="%s",track="{{ track }}"%s}[5s]))'
    targets: dict[str, Any] = {"web": {"kind": "git", "path": "web.yaml"}}
    stages: list[dict[str, Any]] = [
        {"name": "prod", "targets": ["web"],
         "strategy": {"canary": {"steps": [{"setWeight": 50}, {"analysis": {"duration": "9s"}}, {"setWeight": 100}]}}},
    ]  # fmt: skip
    if app == "good":
        targets["pops"] = {"kind": "edge", "sites": {"file": "fleets/edge.yaml"}, "path": "edge/{{ site }}/values.yaml",
                           "batches": ["100%"], "maxFailures": 1, "progressDeadline": "1s"}  # fmt: skip
        stages.append({"name": "edge", "targets": ["pops"]})
    document = spec_document(
        app, source, gitops, targets, stages,
        rollback={"scope": "stage"},
        analysis={
            "prometheus": {"url": prometheus},
            "interval": "3s",
            # No errors on either track can be shown safe only against an absolute tolerance.
            "metrics": [{"name": "error-rate", "kind": "count", "critical": True, "absoluteTolerance": "5%",
                         "query": query % (app, ',code=~"5.."'), "total": query % (app, "")}],
        },
    )  # fmt: skip
    return document, source, revision


def push_body(source: str, branch: str, revision: str) -> bytes:
    payload = {
        "ref": f"refs/heads/{branch}", "before": "1" * 40, "after": revision, "created": False, "deleted": False,
        "repository": {"clone_url": source, "html_url": "https://git.example/o/r"},
        "pusher": {"name": "alice"}, "sender": {"login": "alice"},
    }  # fmt: skip
    return json.dumps(payload).encode()


def github_headers(body: bytes, secret: str = GITHUB_SECRET) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": str(uuid.uuid4()),
        "x-hub-signature-256": sign_github(secret, body),
    }


def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


async def test_every_panel_and_rule_evaluates_against_a_real_stack(
    temporal_env: WorkflowEnvironment, exporters: list[tuple[str, dict[str, str]]], tmp_path: Path
) -> None:
    queue = f"dash-{uuid.uuid4().hex[:8]}"
    worker_port, gateway_port = free_port(), free_port()
    env = aicd_env(
        TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        AICD_TASK_QUEUE=queue,
        AICD_CENSUS_INTERVAL="1",
        AICD_GITHUB_WEBHOOK_SECRET=GITHUB_SECRET,
    )
    with (
        HealthServer().running() as health,
        EmbeddedPrometheus(tmp_path / "prometheus", "1s", rule_files=[RULES]) as prometheus,
    ):
        health.broken.add("pop-2")
        prom = Prom(prometheus.url)
        specs = tmp_path / "specs"
        specs.mkdir()
        documents = {}
        for app in ("good", "bad"):
            documents[app] = app_document(tmp_path, app, prometheus.url, health.url)
            (specs / f"{app}.yaml").write_text(yaml.safe_dump(documents[app][0]))
        worker = ManagedProcess(
            [sys.executable, "-m", "aicd", "worker", "--state-dir", str(tmp_path / "state"), "--metrics-port", str(worker_port),
             "--log-format", "json"],
            tmp_path / "worker.log", env=env, cwd=REPO_ROOT,
        ).start()  # fmt: skip
        gateway = ManagedProcess(
            [sys.executable, "-m", "aicd", "serve", "--specs", str(specs), "--port", str(gateway_port), "--state-dir", str(tmp_path / "gw")],
            tmp_path / "gateway.log", env=env, cwd=REPO_ROOT,
        ).start()  # fmt: skip
        try:
            assert wait_http_ok(f"http://127.0.0.1:{worker_port}/healthz", timeout=60), worker.log_tail(2000)
            assert wait_http_ok(f"http://127.0.0.1:{gateway_port}/healthz", timeout=60), gateway.log_tail(
                2000
            )
            prometheus.set_targets(
                [
                    *exporters,
                    (f"127.0.0.1:{worker_port}", {"job": "aicd-worker"}),
                    (f"127.0.0.1:{gateway_port}", {"job": "aicd-gateway"}),
                ]
            )
            started = time.time()
            # The gateway's counters come to exist with their first event; Prometheus must have seen each
            # series once before more events, or increase() cannot count them (see the report on the
            # gateway's switch to prometheus_client: its series should start at zero).
            assert prom.until('up{job="aicd-gateway"} == 1 and on() up{job="aicd-worker"} == 1')
            delivery_ids: dict[str, str] = {}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{gateway_port}", trust_env=False, timeout=30
            ) as web:

                async def push(app: str, secret: str = GITHUB_SECRET) -> httpx.Response:
                    _document, source, revision = documents[app]
                    branch_at(source, "release/1", revision)
                    body = push_body(source, "release/1", revision)
                    return await web.post("/hooks/github", content=body, headers=github_headers(body, secret))

                for app in documents:
                    answer = await push(app)
                    assert answer.status_code == 200 and answer.json()["result"] == "started", answer.text
                    delivery_ids[app] = answer.json()["deliveries"][0]["delivery_id"]
                    assert prom.until(
                        f'aicd_webhooks_received_total{{job="aicd-gateway"}} >= {len(delivery_ids)}'
                    )
                # Webhooks with a wrong signature: refused, and counted as webhook failures.
                for count in range(1, 6):
                    assert (await push("good", secret="wrong")).status_code == 401
                    if count == 1:
                        assert prom.until('aicd_webhooks_refused_total{job="aicd-gateway"}')
            results = {}
            for app, started_id in delivery_ids.items():
                handle = handle_for(temporal_env.client, started_id)
                results[app] = await asyncio.wait_for(handle.result(), timeout=180)
            assert results["good"].phase == "succeeded", (results, worker.log_tail(3000))
            assert results["bad"].phase == "failed" and "error-rate" in results["bad"].reason, results

            # The rollback alert fires for the bad app (rules are evaluated every second).
            deadline = time.monotonic() + 60
            while not prom.firing("AicdRollback") and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            firing = prom.firing("AicdRollback")
            assert [(labels["app"], labels["scope"], labels["reason"]) for labels in firing] == [
                ("bad", "stage", "failed")
            ]
            # The census has counted the ended deliveries out, and rates have a few samples after the end.
            assert prom.until(
                'max(aicd_deliveries_in_flight) == 0 and on() sum(aicd_deliveries_ended_total{app="bad"}) == 1'
            )
            await asyncio.sleep(3)
            end = time.time()

            empty = []
            for title, expr in panel_queries(json.loads(DASHBOARD.read_text())):
                series = prom.query_range(grafana_expanded(expr), started, end)
                values = [
                    value
                    for item in series
                    for _ts, value in item["values"]
                    if value not in ("NaN", "+Inf", "-Inf")
                ]
                if not values:
                    empty.append(f"{title}: {expr}")
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

            for _name, expr in rule_expressions():
                prom.query(expr)  # evaluates without error (asserted inside)
            failing_webhooks = prom.query(dict(rule_expressions())["AicdWebhookFailureRate"])
            assert {item["metric"]["provider"] for item in failing_webhooks} == {"github"}, (
                prom.query("aicd_webhooks_received_total"),
                prom.query("aicd_webhooks_refused_total"),
                prom.query(
                    'sum by (provider) (increase(aicd_webhooks_received_total{job="aicd-gateway"}[10m]))'
                ),
            )

            worker.stop(grace=15.0)
            not_polling = prom.until(dict(rule_expressions())["AicdWorkerNotPolling"], timeout=30)
            assert f"127.0.0.1:{worker_port}" in {item["metric"].get("instance") for item in not_polling}, (
                not_polling
            )
        finally:
            worker.stop(grace=15.0)
            gateway.stop(grace=10.0)


def test_dashboard_names_only_exported_series_and_uses_its_datasource_variable() -> None:
    """Offline checks of the JSON itself: every query has a datasource variable Grafana can resolve, every
    aicd_* series it names is one the code defines."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert any(variable["type"] == "datasource" for variable in dashboard["templating"]["list"])
    defined = set(
        re.findall(r'"(aicd_[a-z_]+)"', (REPO_ROOT / "aicd" / "observability" / "metrics.py").read_text())
    )
    gateway_today = set(
        re.findall(r'"(aicd_[a-z_]+)"', (REPO_ROOT / "aicd" / "gateway" / "metrics.py").read_text())
    )
    gateway_today |= set(
        re.findall(r'"(aicd_[a-z_]+)"', (REPO_ROOT / "aicd" / "gateway" / "webhooks.py").read_text())
    )
    suffixes = ("_bucket", "_count", "_sum")
    for title, expr in panel_queries(dashboard):
        for name in re.findall(r"\baicd_[a-z_]+", expr):
            base = next((name[: -len(suffix)] for suffix in suffixes if name.endswith(suffix)), name)
            assert name in defined | gateway_today or base in defined, (
                f"{title}: {name} is exported by nobody"
            )
