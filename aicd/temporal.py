"""Temporal client settings: the standard TEMPORAL_* environment (address, namespace, TLS, API key) and
the optional profile file, so the same code reaches the embedded dev server, a cluster or Temporal Cloud."""

from __future__ import annotations

import logging
import os
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from aicd.redact import remember_secret

TASK_QUEUE_ENV = "AICD_TASK_QUEUE"
DEFAULT_TASK_QUEUE = "aicd"
DEFAULT_ADDRESS = "localhost:7233"


def task_queue() -> str:
    return os.environ.get(TASK_QUEUE_ENV, DEFAULT_TASK_QUEUE)


async def connect(address: str | None = None, *, runtime: Runtime | None = None) -> Client:
    """Connect with TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_API_KEY / TEMPORAL_TLS_* (or a profile).
    The client traces when the OTEL_* environment asks for it (aicd.observability.tracing; its interceptor
    also applies to workers built on this client); `runtime` carries the worker's metrics exporter."""
    return await Client.connect(
        **client_config(address), interceptors=_tracing_interceptors(), runtime=runtime
    )


def client_config(address: str | None = None) -> dict[str, Any]:
    """The client's settings from the environment or profile; the TLS client key it read (from a file or
    the profile) is masked from then on (aicd.redact)."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if address:
        config["target_host"] = address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    tls = config.get("tls")
    if isinstance(tls, TLSConfig) and tls.client_private_key:
        remember_secret(tls.client_private_key.decode("utf-8", "surrogateescape"))
    return config


def _tracing_interceptors() -> list[Interceptor]:
    from aicd.observability.tracing import TracingConfigError, configure_tracing

    try:
        return list(configure_tracing().interceptors)
    except TracingConfigError as error:  # the worker refuses to start on this; a CLI command goes on untraced
        logging.getLogger(__name__).warning("tracing off: %s", error)
        return []
