"""The worker's own signals on a real Temporal dev server and real Git: metrics recorded by the interceptor
(deliveries, steps, rollbacks, target outcomes, refused writes), recorded once however often a history is
replayed; deliveries in flight counted in Temporal's visibility store; JSON log lines carrying the
delivery context from activities; bounded labels; the health endpoints."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd.activities import WorkerSettings
from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger
from aicd.observability import context as delivery_context
from aicd.observability.census import DeliveryCensus
from aicd.observability.interceptor import MetricsInterceptor
from aicd.observability.logs import DeliveryContextFilter, JsonFormatter
from aicd.observability.metrics import APP_PATTERN, OTHER, AicdMetrics, BoundedValues
from aicd.observability.server import MetricsServer, WorkerHealth
from aicd.testing.engine import commits, make_repo, plan_from, spec_document, temporal_env, wait_for
from aicd.worker import build_worker

__all__ = ["temporal_env"]

SEED = "image:\n  tag: v0\ncanary:\n  weight: 0\n"


@asynccontextmanager
async def observed_worker(
    client: Client, state_dir: Path, metrics: AicdMetrics, queue: str
) -> AsyncIterator[None]:
    async with build_worker(
        client, WorkerSettings(state_dir=state_dir), queue, [MetricsInterceptor(metrics)]
    ):
        yield


def sample(metrics: AicdMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def two_stage_spec(tmp_path: Path, app: str, *, production_file: str = SEED) -> tuple[dict, str, str]:
    source, revision = make_repo(tmp_path, f"{app}-source", {"README": f"{uuid.uuid4()}\n"})
    gitops, _ = make_repo(tmp_path, f"{app}-gitops", {"staging.yaml": SEED, "prod.yaml": production_file})
    document = spec_document(
        app,
        source,
        gitops,
        {"staging": {"kind": "git", "path": "staging.yaml"}, "prod": {"kind": "git", "path": "prod.yaml"}},
        [
            {
                "name": "staging",
                "targets": ["staging"],
                "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
            },
            {
                "name": "production",
                "targets": ["prod"],
                "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]}},
            },
        ],
        rollback={"scope": "stage"},
    )
    return document, gitops, revision


async def test_metrics_of_an_aborted_delivery_are_recorded_once_across_worker_restarts_and_replays(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = temporal_env.client
    app = f"obs-{uuid.uuid4().hex[:6]}"
    document, gitops, revision = two_stage_spec(tmp_path, app)
    plan = plan_from(document, revision)
    metrics = AicdMetrics(CollectorRegistry())
    queue = f"test-{uuid.uuid4().hex[:10]}"
    census = DeliveryCensus(client, metrics, queue)

    async with observed_worker(client, tmp_path / "state-a", metrics, queue):
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        await wait_for(
            client,
            plan.delivery_id,
            lambda s: "prod" in s.targets and s.targets["prod"].state == "awaiting-resume",
        )
        assert sample(metrics, "aicd_deliveries_started_total", app=app) == 1
        assert sample(metrics, "aicd_target_rollouts_total", target_kind="git", outcome="promoted") == 1
        # Visibility says where the delivery stands (a target waiting for a human shows the delivery paused).
        counts = await _census_until(census, lambda counts: counts.get("paused") == 1)
        assert counts["unknown"] == 0 and sum(counts.values()) == 1

    # A new worker picks the delivery up by replaying its history: nothing is counted again.
    async with observed_worker(client, tmp_path / "state-b", metrics, queue):
        await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "bad canary"))
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "aborted"
    assert sample(metrics, "aicd_deliveries_started_total", app=app) == 1
    assert sample(metrics, "aicd_deliveries_ended_total", app=app, phase="aborted") == 1
    assert sample(metrics, "aicd_delivery_duration_seconds_count", phase="aborted") == 1
    assert sample(metrics, "aicd_rollbacks_total", app=app, scope="stage", reason="aborted") == 1
    assert sample(metrics, "aicd_target_rollouts_total", target_kind="git", outcome="aborted") == 1
    # Two setWeight commits and the rollback commit, each timed; the rollback commit really landed.
    assert (
        sample(metrics, "aicd_step_duration_seconds_count", kind="setWeight", target_kind="git", outcome="ok")
        == 2
    )
    assert (
        sample(metrics, "aicd_step_duration_seconds_count", kind="rollback", target_kind="", outcome="ok")
        == 1
    )
    assert any(c.get("Aicd-Step") == "production/prod/rollback" for c in commits(gitops))

    # A query of the closed delivery on a fresh worker replays its whole history: still counted once.
    async with observed_worker(client, tmp_path / "state-c", metrics, queue):
        status = await get_status(client, plan.delivery_id)
    assert status.phase == "aborted"
    assert sample(metrics, "aicd_deliveries_started_total", app=app) == 1
    assert sample(metrics, "aicd_deliveries_ended_total", app=app, phase="aborted") == 1
    assert sample(metrics, "aicd_rollbacks_total", app=app, scope="stage", reason="aborted") == 1
    ended = await _census_until(census, lambda counts: sum(counts.values()) == 0)
    assert sum(ended.values()) == 0, ended


async def _census_until(census: DeliveryCensus, done: object, timeout: float = 15.0) -> dict[str, int]:
    """Visibility is eventually consistent: count until `done(counts)` holds."""
    assert callable(done)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        counts = await census.count()
        if done(counts) or asyncio.get_running_loop().time() > deadline:
            return counts
        await asyncio.sleep(0.2)


@contextmanager
def json_log_lines() -> Iterator[io.StringIO]:
    """Every record of the process as the worker's JSON handler writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(DeliveryContextFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


async def test_json_log_lines_of_activities_carry_delivery_app_stage_and_target(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = temporal_env.client
    app = f"logs-{uuid.uuid4().hex[:6]}"
    # The production target's file is not a YAML mapping: its step fails in the target's rollout child.
    document, _gitops, revision = two_stage_spec(tmp_path, app, production_file="- not\n- a mapping\n")
    plan = plan_from(document, revision)
    metrics = AicdMetrics(CollectorRegistry())
    queue = f"test-{uuid.uuid4().hex[:10]}"
    with json_log_lines() as stream:
        async with observed_worker(client, tmp_path / "state", metrics, queue):
            await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
            result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "failed"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line.get("delivery_id") == plan.delivery_id]
    # activity.logger in the delivery's own activity (the release claim): delivery and app, no target.
    claim = [line for line in mine if "claims" in line["message"]]
    assert (
        claim
        and claim[0]["app"] == app
        and "target" not in claim[0]
        and claim[0]["activity_type"] == "claim_release"
    )
    # The SDK's record of the failed step in the target's child workflow: stage and target too.
    failed = [
        line for line in mine if line.get("activity_type") == "apply_step" and line["level"] == "warning"
    ]
    assert failed, [line["message"] for line in mine]
    assert {(line["app"], line["stage"], line["target"]) for line in failed} == {(app, "production", "prod")}
    assert sample(metrics, "aicd_gitops_writes_refused_total", reason="GitOpsFileInvalid") >= 1
    assert (
        sample(
            metrics, "aicd_step_duration_seconds_count", kind="setWeight", target_kind="git", outcome="error"
        )
        >= 1
    )


async def test_log_context_reaches_threads_the_activity_hands_work_to() -> None:
    record_fields: list[dict[str, str]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record_fields.append(
                {key: getattr(record, key, "") for key in ("delivery_id", "app", "stage", "target")}
            )

    handler = Capture()
    handler.addFilter(DeliveryContextFilter())
    logger = logging.getLogger("tests.observability.thread")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    sha = "a" * 40
    token = delivery_context.CURRENT.set(
        delivery_context.from_workflow_id(f"delivery-web-api-{sha}-2--prod--use1")
    )
    try:
        await asyncio.to_thread(logger.info, "from a worker thread")
    finally:
        delivery_context.CURRENT.reset(token)
        logger.removeHandler(handler)
    assert record_fields == [
        {"delivery_id": f"delivery-web-api-{sha}-2", "app": "web-api", "stage": "prod", "target": "use1"}
    ]


def test_workflow_ids_that_are_not_deliveries_give_no_context() -> None:
    assert delivery_context.from_workflow_id("some-other-workflow").fields() == {}
    assert delivery_context.from_workflow_id(f"delivery-web-{'b' * 40}").fields() == {
        "delivery_id": f"delivery-web-{'b' * 40}",
        "app": "web",
    }


def test_configuration_derived_labels_are_bounded_and_checked() -> None:
    apps = BoundedValues(2, APP_PATTERN)
    assert [apps("a"), apps("b"), apps("a"), apps("c"), apps("Not An App")] == ["a", "b", "a", OTHER, OTHER]
    metrics = AicdMetrics(CollectorRegistry(), max_apps=1)
    metrics.delivery_started("first", "stage")
    metrics.delivery_started("second", "stage")
    metrics.delivery_ended("first", "made-up-phase", 1.0)
    assert sample(metrics, "aicd_deliveries_started_total", app="first") == 1
    assert sample(metrics, "aicd_deliveries_started_total", app=OTHER) == 1
    assert sample(metrics, "aicd_deliveries_ended_total", app="first", phase=OTHER) == 1


async def test_health_endpoints_follow_the_worker_and_the_event_loop(
    temporal_env: WorkflowEnvironment,
) -> None:
    health = WorkerHealth(stale_after_s=1.0)
    registry = CollectorRegistry()
    AicdMetrics(registry)
    server = MetricsServer("127.0.0.1", 0, registry, health).start()
    base = f"http://127.0.0.1:{server.port}"
    stop = asyncio.Event()
    fresh = asyncio.create_task(health.keep_fresh(temporal_env.client, stop))
    try:
        async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
            assert (await http.get("/healthz")).status_code == 503  # not polling yet
            health.polling = True
            await asyncio.sleep(0.2)
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200  # Temporal answered its health check
            metrics_text = (await http.get("/metrics")).text
            assert "aicd_deliveries_in_flight" in metrics_text and "aicd_build_info" in metrics_text
            assert (await http.get("/nothing")).status_code == 404
            stop.set()
            await fresh
            await asyncio.sleep(1.3)  # the loop stopped stamping: as if it were blocked
            answer = await http.get("/healthz")
            assert answer.status_code == 503 and "unresponsive" in answer.text
    finally:
        stop.set()
        server.stop()
