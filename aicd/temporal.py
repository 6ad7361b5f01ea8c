"""Temporal client settings: the standard TEMPORAL_* environment (address, namespace, TLS, API key) and
the optional profile file, so the same code reaches the embedded dev server, a cluster or Temporal Cloud."""

from __future__ import annotations

import logging
import os

from temporalio.client import Client, Interceptor
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

TASK_QUEUE_ENV = "AICD_TASK_QUEUE"
DEFAULT_TASK_QUEUE = "aicd"
DEFAULT_ADDRESS = "localhost:7233"


def task_queue() -> str:
    return os.environ.get(TASK_QUEUE_ENV, DEFAULT_TASK_QUEUE)


async def connect(address: str | None = None, *, runtime: Runtime | None = None) -> Client:
    """Connect with TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_API_KEY / TEMPORAL_TLS_* (or a profile).
    The client traces when the OTEL_* environment asks for it (aicd.observability.tracing; its interceptor
    also applies to workers built on this client); `runtime` carries the worker's metrics exporter."""
    config = ClientConfig.load_client_connect_config()
    if address:
        config["target_host"] = address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    return await Client.connect(**config, interceptors=_tracing_interceptors(), runtime=runtime)


def _tracing_interceptors() -> list[Interceptor]:
    from aicd.observability.tracing import TracingConfigError, configure_tracing

    try:
        return list(configure_tracing().interceptors)
    except TracingConfigError as error:  # the worker refuses to start on this; a CLI command goes on untraced
        logging.getLogger(__name__).warning("tracing off: %s", error)
        return []
