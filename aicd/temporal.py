"""Temporal client settings: the standard TEMPORAL_* environment (address, namespace, TLS, API key) and
the optional profile file, so the same code reaches the embedded dev server, a cluster or Temporal Cloud."""

from __future__ import annotations

import os
from collections.abc import Sequence

from temporalio.client import Client, Interceptor
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

TASK_QUEUE_ENV = "AICD_TASK_QUEUE"
DEFAULT_TASK_QUEUE = "aicd"
DEFAULT_ADDRESS = "localhost:7233"


def task_queue() -> str:
    return os.environ.get(TASK_QUEUE_ENV, DEFAULT_TASK_QUEUE)


async def connect(
    address: str | None = None, *, interceptors: Sequence[Interceptor] = (), runtime: Runtime | None = None
) -> Client:
    """Connect with TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_API_KEY / TEMPORAL_TLS_* (or a profile).
    `interceptors` (tracing) also apply to workers built on this client; `runtime` carries its telemetry."""
    config = ClientConfig.load_client_connect_config()
    if address:
        config["target_host"] = address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    return await Client.connect(**config, interceptors=interceptors, runtime=runtime)
