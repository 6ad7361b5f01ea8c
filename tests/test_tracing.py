"""OpenTelemetry tracing of deliveries: off unless the standard OTEL_* variables ask for it; when they do, a
worker (`aicd worker` in its own process) exports the spans of a delivery - the delivery workflow, its target
rollout child, their activities - as one trace over OTLP/HTTP, here to a loopback receiver that decodes
them with OpenTelemetry's own protobuf types."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from aicd.client import handle_for, start_delivery
from aicd.dev.ports import free_port, wait_http_ok
from aicd.dev.processes import ManagedProcess
from aicd.messages import Trigger
from aicd.observability.tracing import TracingConfigError, configure_tracing, wanted
from aicd.testing.engine import make_repo, plan_from, running_worker, spec_document, temporal_env
from tests.conftest import REPO_ROOT, RunAicd, aicd_env

__all__ = ["temporal_env"]


class OtlpReceiver:
    """POST /v1/traces (OTLP/HTTP, protobuf): keeps every span as (name, trace id, attributes, resource)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            attributes = {a.key: a.value.string_value for a in span.attributes}
                            owner.spans.append(
                                {
                                    "name": span.name,
                                    "trace": span.trace_id.hex(),
                                    "attributes": attributes,
                                    "resource": resource,
                                }
                            )
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[OtlpReceiver]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def test_tracing_is_off_unless_the_environment_asks_for_it() -> None:
    assert not wanted({})
    assert not wanted({"OTEL_SERVICE_NAME": "aicd"})  # naming the service asks for no export
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"})
    assert not wanted(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    )
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not configure_tracing({}).enabled
    with pytest.raises(TracingConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf or grpc"):
        configure_tracing(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}
        )


def test_a_worker_with_an_unknown_exporter_exits_2_naming_the_variable(
    run_aicd: RunAicd, tmp_path: Path
) -> None:
    done = run_aicd("worker", "--state-dir", str(tmp_path), env=aicd_env(OTEL_TRACES_EXPORTER="zipkin"))
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER: otlp, console or none, not 'zipkin'" in done.stderr


async def test_a_delivery_is_one_trace_from_the_cli_through_the_worker(
    temporal_env: WorkflowEnvironment, tmp_path: Path, run_aicd: RunAicd
) -> None:
    app = f"traced-{uuid.uuid4().hex[:6]}"
    source, revision = make_repo(tmp_path, "source", {"README": f"{uuid.uuid4()}\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
    document = spec_document(
        app, source, gitops, {"web": {"kind": "git", "path": "web.yaml"}},
        [{"name": "prod", "targets": ["web"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
    )  # fmt: skip
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(document))
    queue = f"traced-{uuid.uuid4().hex[:8]}"
    port = free_port()
    with OtlpReceiver().running() as receiver:
        common = {
            "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "AICD_TASK_QUEUE": queue,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        }
        argv = [
            sys.executable,
            "-m",
            "aicd",
            "worker",
            "--state-dir",
            str(tmp_path / "state"),
            "--metrics-port",
            str(port),
        ]
        worker = ManagedProcess(argv, tmp_path / "worker.log", env=aicd_env(**common), cwd=REPO_ROOT).start()
        try:
            assert wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=60), worker.log_tail(2000)
            delivered = run_aicd(
                "deliver",
                str(spec),
                "--revision",
                revision,
                "--wait",
                env=aicd_env(**common, OTEL_SERVICE_NAME="aicd-cli"),
            )
            assert delivered.returncode == 0, delivered.stdout + delivered.stderr
        finally:
            worker.stop(grace=15.0)  # SIGTERM: the worker flushes its spans on the way out
    delivery = f"delivery-{app}-{revision}"
    mine = [
        span
        for span in receiver.spans
        if span["attributes"].get("temporalWorkflowID", "").startswith(delivery)
    ]
    names = {span["name"] for span in mine}
    assert {"StartWorkflow:DeliveryWorkflow", "RunWorkflow:DeliveryWorkflow", "RunWorkflow:TargetRolloutWorkflow",
            "RunActivity:apply_step"} <= names, names  # fmt: skip
    traces = {span["trace"] for span in mine}
    assert len(traces) == 1, sorted((span["trace"][:6], span["name"]) for span in mine)
    services = {span["resource"].get("service.name") for span in mine}
    assert services == {"aicd-cli", "aicd-worker"}, services
    assert {span["resource"].get("deployment.environment") for span in mine} == {"test"}


class QuotesItsUrl(Interceptor):
    """Inside the worker's chain: a failed command's error quotes a URL with a password and a secret the
    worker holds, as a git error quoting its remote can (the redaction is what must take them out)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        text = self.text

        class Inbound(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                try:
                    return await super().execute_activity(input)
                except ApplicationError as error:
                    raise RuntimeError(text) from error

        return Inbound(next)


async def test_spans_hold_only_the_redacted_failure(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The worker's tracing interceptor comes with its client, so the worker puts it outside the redaction:
    the exception a failed activity's span records is the one Temporal stores, without the password of a URL
    or a secret the worker holds."""
    password, secret = f"pw-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = temporal_env.client.config()
    config["interceptors"] = [
        TracingInterceptor(provider.get_tracer("test"), always_create_workflow_spans=True)
    ]
    client = Client(**config)
    source, revision = make_repo(tmp_path, "source", {"README": f"{uuid.uuid4()}\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
    document = spec_document(
        "spanned", source, gitops, {"web": {"kind": "git", "path": "web.yaml"}}, [{"name": "prod", "targets": ["web"]}],
        build={"command": [sys.executable, "-c", "exit(1)"], "artifact": "r/spanned:1"},
    )  # fmt: skip
    plan = plan_from(document, revision)
    leaky = QuotesItsUrl(f"cannot fetch https://ci:{password}@git.example.com/x.git as {secret}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEPLOY_TOKEN", secret)
        async with running_worker(client, tmp_path / "state", [leaky]) as queue:
            await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
            assert (await handle_for(client, plan.delivery_id).result()).phase == "failed"
    spans = exporter.get_finished_spans()
    failed = [span for span in spans if span.name == "RunActivity:run_command"]
    assert failed and any(event.name == "exception" for span in failed for event in span.events)
    text = repr([(span.name, dict(span.attributes or {}), [(e.name, dict(e.attributes or {})) for e in span.events])
                 for span in spans])  # fmt: skip
    assert "https://ci:***@git.example.com" in text and "as ***" in text
    assert password not in text and secret not in text
