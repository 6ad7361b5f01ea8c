"""The Temporal worker (`aicd worker`, `python -m aicd.worker`, `python worker.py` in a checkout): runs every aicd
workflow and activity.

Roles: a worker serves the delivery queue (workflows and every activity but GitOps writes) and the writer
queue (GitOps writes, aicd.workflows.common.writer_queue). `--role all` (the default) serves both: one worker
is a whole aicd. A fleet runs any number of `--role delivery` workers and one `--role gitops-writer` at a time,
so more workers never means more workers racing pushes to one GitOps branch.

Reads the standard Temporal client settings (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,
TEMPORAL_TLS_*), so the same worker runs against the embedded dev server, a cluster or Temporal Cloud.

With `--metrics-port` (AICD_METRICS_PORT) it serves `/metrics` (aicd's metrics and the Temporal SDK's),
`/healthz` and `/readyz` on that port; `--log-format json` (AICD_LOG_FORMAT) writes one JSON object per log
line with the delivery context; the standard OTEL_* variables turn on tracing (aicd.observability).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, disable_created_metrics
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Interceptor, Worker

from aicd.activities import WorkerSettings, delivery_activities, writer_activities
from aicd.activities.failures import RedactActivityOutput
from aicd.dev.ports import LOOPBACK, free_port
from aicd.observability.census import DEFAULT_INTERVAL_S, DeliveryCensus
from aicd.observability.interceptor import MetricsInterceptor
from aicd.observability.logs import LOG_FORMATS, configure_logging
from aicd.observability.metrics import AicdMetrics, worker_registry
from aicd.observability.server import MetricsServer, WorkerHealth
from aicd.observability.tracing import TracingConfigError, configure_tracing
from aicd.redact import process_mask, watch_configured_secret_files
from aicd.temporal import connect, task_queue, with_data_converter
from aicd.workflows.common import host_queue, writer_queue
from aicd.workflows.registry import ALL_WORKFLOWS, sandbox_runner

METRICS_PORT_ENV = "AICD_METRICS_PORT"
METRICS_HOST_ENV = "AICD_METRICS_HOST"
LOG_FORMAT_ENV = "AICD_LOG_FORMAT"
CENSUS_INTERVAL_ENV = "AICD_CENSUS_INTERVAL"
ROLE_ENV = "AICD_WORKER_ROLE"
DEFAULT_METRICS_HOST = "0.0.0.0"  # scraped and probed from outside the pod

WorkerRole = Literal["all", "delivery", "gitops-writer"]
WORKER_ROLES: tuple[WorkerRole, ...] = get_args(WorkerRole)

log = logging.getLogger("aicd.worker")


@dataclass
class ObservabilitySettings:
    metrics_port: int | None = None  # None: no metrics/health endpoint; 0: any free port
    metrics_host: str = DEFAULT_METRICS_HOST
    census_interval_s: float = DEFAULT_INTERVAL_S  # how often deliveries in flight are counted


class Workers:
    """The Temporal workers of one aicd worker process (one per task queue it serves), run together."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self._stack = AsyncExitStack()

    @property
    def task_queues(self) -> list[str]:
        return [worker.task_queue for worker in self.workers]

    async def __aenter__(self) -> Workers:
        for worker in self.workers:
            await self._stack.enter_async_context(worker)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(kind, error, tb)


def build_worker(
    client: Client,
    settings: WorkerSettings,
    queue: str | None = None,
    interceptors: Sequence[Interceptor] = (),
    role: WorkerRole = "all",
) -> Workers:
    queue = queue or task_queue()
    client = with_data_converter(client)
    watch_configured_secret_files()  # git's credentials, SSH key, TLS key: masked as the commands' secrets
    # Outermost: what reaches Temporal is redacted, whatever the interceptors inside saw.
    chain = [RedactActivityOutput(process_mask(extra=settings.command_secrets.values())), *interceptors]
    workers = []
    if role in ("all", "delivery"):
        own_queue = host_queue(queue, socket.gethostname(), str(settings.state_dir.resolve()))
        settings = dataclasses.replace(settings, host_queue=own_queue)
        activities = delivery_activities(settings, client)
        workers.append(
            Worker(
                client,
                task_queue=queue,
                workflows=ALL_WORKFLOWS,
                activities=activities,
                workflow_runner=sandbox_runner(),
                interceptors=chain,
                max_concurrent_activities=200,
                graceful_shutdown_timeout=timedelta(seconds=5),
            )
        )
        # Only this worker: the delivery's later commands and gate checks, where its checkout and reports are.
        workers.append(
            Worker(
                client,
                task_queue=settings.host_queue,
                activities=activities,
                interceptors=chain,
                max_concurrent_activities=200,
                graceful_shutdown_timeout=timedelta(seconds=5),
            )
        )
    if role in ("all", "gitops-writer"):
        workers.append(
            Worker(
                client,
                task_queue=writer_queue(queue),
                activities=writer_activities(settings, client),
                interceptors=chain,
                max_concurrent_activities=200,
                graceful_shutdown_timeout=timedelta(seconds=5),
            )
        )
    return Workers(workers)


def _temporal_runtime() -> tuple[Runtime, str]:
    """A Temporal runtime whose Prometheus exporter listens on a free loopback port; its metrics are folded
    into the worker's own endpoint (aicd.observability.metrics.TemporalRuntimeMetrics)."""
    for attempt in range(3):
        address = f"{LOOPBACK}:{free_port()}"
        config = PrometheusConfig(
            bind_address=address, counters_total_suffix=True, unit_suffix=True, durations_as_seconds=True
        )
        try:
            return Runtime(telemetry=TelemetryConfig(metrics=config)), f"http://{address}/metrics"
        except Exception:  # the port was taken in between
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def run_worker(
    state_dir: Path,
    address: str | None = None,
    queue: str | None = None,
    observability: ObservabilitySettings | None = None,
    role: WorkerRole = "all",
) -> None:
    observability = observability or ObservabilitySettings()
    queue = queue or task_queue()
    tracing = configure_tracing(default_service_name="aicd-worker")  # before connect(), which uses it
    runtime, registry, server = None, CollectorRegistry(), None
    health = WorkerHealth()
    if observability.metrics_port is not None:
        disable_created_metrics()  # no `_created` twin of every counter: Prometheus does not use them
        runtime, temporal_metrics = _temporal_runtime()
        registry = worker_registry(temporal_metrics)
        server = MetricsServer(
            observability.metrics_host, observability.metrics_port, registry, health
        ).start()
        log.info(
            "metrics and health on %s:%d (/metrics, /healthz, /readyz)",
            observability.metrics_host,
            server.port,
        )
    metrics = AicdMetrics(registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        client = await connect(address, runtime=runtime)
        worker = build_worker(
            client, WorkerSettings(state_dir=state_dir), queue, [MetricsInterceptor(metrics)], role
        )
        background = [asyncio.create_task(health.keep_fresh(client, stop))]
        if server is not None:
            background.append(
                asyncio.create_task(
                    DeliveryCensus(client, metrics, queue, observability.census_interval_s).run(stop)
                )
            )
        async with worker:
            health.polling = True
            log.info(
                "worker (role %s) running on task queues %s%s",
                role,
                ", ".join(worker.task_queues),
                " (tracing on)" if tracing.enabled else "",
            )
            await stop.wait()
            health.polling = False
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        if server is not None:
            server.stop()
        tracing.shutdown()


def observability_from(metrics_port: int | None, metrics_host: str | None) -> ObservabilitySettings:
    """The flags, plus AICD_CENSUS_INTERVAL: seconds between counts of the deliveries in flight."""
    interval = os.environ.get(CENSUS_INTERVAL_ENV, "").strip()
    try:
        census_interval_s = float(interval) if interval else DEFAULT_INTERVAL_S
    except ValueError:
        print(f"worker: {CENSUS_INTERVAL_ENV} must be a number of seconds, not {interval!r}", file=sys.stderr)
        raise SystemExit(2) from None
    return ObservabilitySettings(
        metrics_port=metrics_port,
        metrics_host=metrics_host or DEFAULT_METRICS_HOST,
        census_interval_s=census_interval_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", default=".aicd", help="where Git clones and command logs live")
    parser.add_argument("--address", default=None, help="Temporal address (default TEMPORAL_ADDRESS)")
    parser.add_argument("--task-queue", default=None)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=_env_int(METRICS_PORT_ENV),
        help=f"serve /metrics, /healthz, /readyz (${METRICS_PORT_ENV})",
    )
    parser.add_argument(
        "--metrics-host",
        default=os.environ.get(METRICS_HOST_ENV),
        help=f"address to serve them on (${METRICS_HOST_ENV})",
    )
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=os.environ.get(LOG_FORMAT_ENV, "text"))
    parser.add_argument(
        "--role",
        choices=WORKER_ROLES,
        default=os.environ.get(ROLE_ENV, "all"),
        help=f"all (default), delivery, or gitops-writer: one per fleet at a time (${ROLE_ENV})",
    )
    args = parser.parse_args()
    configure_logging("INFO", args.log_format)
    try:
        asyncio.run(
            run_worker(
                Path(args.state_dir),
                args.address,
                args.task_queue,
                observability_from(args.metrics_port, args.metrics_host),
                args.role,
            )
        )
    except TracingConfigError as error:
        print(f"worker: {error}", file=sys.stderr)
        sys.exit(2)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        print(f"worker: {name} must be a port number, not {value!r}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
