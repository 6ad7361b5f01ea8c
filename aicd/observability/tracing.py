"""Optional OpenTelemetry tracing of deliveries through Temporal's tracing interceptor.

Off unless the standard environment asks for it: `OTEL_TRACES_EXPORTER` (otlp | console | none), or an
OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SDK_DISABLED=true`
turns it off whatever else is set. The rest is the SDK's own reading of the standard variables: the
protocol (`OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, http/protobuf by default; grpc needs
opentelemetry-exporter-otlp-proto-grpc), headers, certificates, `OTEL_SERVICE_NAME` (default `aicd-worker`
here), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`.

Every Temporal client aicd makes (aicd.temporal.connect) carries the interceptor, so every workflow start,
signal, update and query a process makes, and every workflow and activity a worker runs, becomes a span.
The trace context travels in Temporal headers: a delivery started by a traced gateway, poller or CLI is one
trace from the trigger through the delivery workflow, its target rollouts and their activities. Started by
an untraced client, each workflow task of the delivery starts a trace of its own. The packages are the
`otel` extra: `pip install 'aic-delivery[otel]'`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SERVICE_NAME = "aicd"


class TracingConfigError(ValueError):
    """The OTEL_* environment asks for something this installation cannot do."""


@dataclass
class Tracing:
    interceptors: list[Any] = field(default_factory=list)
    shutdown: Callable[[], None] = lambda: None  # flushes spans still buffered

    @property
    def enabled(self) -> bool:
        return bool(self.interceptors)


def flush_process_tracing() -> None:
    """Export what the process's tracer still buffers (before a command exits with os._exit)."""
    if _PROCESS:
        _PROCESS[0].shutdown()


def wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


_PROCESS: list[Tracing] = []  # configured from os.environ, once per process


def configure_tracing(
    env: Mapping[str, str] | None = None, default_service_name: str = DEFAULT_SERVICE_NAME
) -> Tracing:
    """A tracer provider with the configured exporter and Temporal's TracingInterceptor, or nothing. From
    the process environment (env None) it is configured once: later calls return the same."""
    if env is None:
        if not _PROCESS:
            _PROCESS.append(configure_tracing(os.environ, default_service_name))
        return _PROCESS[0]
    if not wanted(env):
        return Tracing()
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError as error:
        raise TracingConfigError(
            f"OTEL_* asks for traces but OpenTelemetry is not installed ({error.name}): pip install 'aic-delivery[otel]'"
        ) from None
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: default_service_name}
    provider = TracerProvider(
        resource=Resource.create(attributes)
    )  # merges OTEL_RESOURCE_ATTRIBUTES / _SERVICE_NAME
    provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
    trace.set_tracer_provider(provider)
    flushed: list[bool] = []

    def shutdown() -> (
        None
    ):  # the worker flushes on its way out, the CLI again before os._exit: once is enough
        if not flushed:
            flushed.append(True)
            provider.shutdown()

    return Tracing([TracingInterceptor(always_create_workflow_spans=True)], shutdown)


def _exporter(env: Mapping[str, str]) -> Any:
    kind = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if "," in kind:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: one exporter, not {kind!r}")
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: otlp, console or none, not {kind!r}")
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    try:
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        elif protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # type: ignore[no-redef]
        else:
            raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf or grpc, not {protocol!r}")
    except ImportError as error:
        raise TracingConfigError(
            f"no OTLP exporter for protocol {protocol} ({error.name}): pip install 'aic-delivery[otel]'"
            + (" opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else "")
        ) from None
    return OTLPSpanExporter()
