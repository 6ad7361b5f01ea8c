"""Temporal client settings: the standard TEMPORAL_* environment (address, namespace, TLS, API key) and
the optional profile file, so the same code reaches the embedded dev server, a cluster or Temporal Cloud."""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from typing import Any
from weakref import WeakKeyDictionary

from temporalio.client import Client, Interceptor
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    JSONTypeConverter,
    value_to_type,
)
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
        **client_config(address),
        data_converter=DATA_CONVERTER,
        interceptors=_tracing_interceptors(),
        runtime=runtime,
    )


def with_data_converter(client: Client) -> Client:
    """The client with aicd's data converter (the same JSON on the wire): a worker built on a client made
    elsewhere -- a test's or bench's environment -- decodes as fast as one built on `connect`."""
    if client.data_converter is DATA_CONVERTER:
        return client
    config = client.config()
    config["data_converter"] = DATA_CONVERTER
    return Client(**config)


def client_config(address: str | None = None) -> dict[str, Any]:
    """The client's settings from the environment or profile; the TLS client key and the API key it read
    (from a file, the environment or the profile) are masked from then on (aicd.redact)."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if address:
        config["target_host"] = address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    tls = config.get("tls")
    if isinstance(tls, TLSConfig) and tls.client_private_key:
        remember_secret(tls.client_private_key.decode("utf-8", "surrogateescape"))
    if isinstance(config.get("api_key"), str) and config["api_key"]:
        remember_secret(config["api_key"])  # from temporal.toml, no variable's name gives it away
    return config


def _tracing_interceptors() -> list[Interceptor]:
    from aicd.observability.tracing import TracingConfigError, configure_tracing

    try:
        return list(configure_tracing().interceptors)
    except TracingConfigError as error:  # the worker refuses to start on this; a CLI command goes on untraced
        logging.getLogger(__name__).warning("tracing off: %s", error)
        return []


class _DataclassFields(JSONTypeConverter):
    """Decodes a dataclass as the SDK does, with its fields' types resolved once per class. The SDK resolves
    them (typing.get_type_hints, evaluating every string annotation) for each value it decodes, which in the
    workflow sandbox -- whose builtins are wrapped -- was most of a workflow task's CPU for a step's result.
    Classes a workflow run re-imports are dropped with it (weak keys). The SDK makes a converter per
    serialization context, so the resolved types are the class's, not the instance's."""

    _hints: WeakKeyDictionary[type, dict[str, Any]] = WeakKeyDictionary()

    def to_typed_value(self, hint: type, value: Any) -> Any:
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return JSONTypeConverter.Unhandled
        if not isinstance(value, dict):
            raise TypeError(f"Cannot convert to dataclass {hint}, value is {type(value)} not dict")
        hints = self._hints.get(hint)
        if hints is None:
            hints = self._hints[hint] = typing.get_type_hints(hint)
        init_values: dict[str, Any] = {}
        other_values: dict[str, Any] = {}
        for field in dataclasses.fields(hint):
            if field.name not in value:
                continue  # a missing required field fails the class's own __init__ below
            try:
                converted = value_to_type(hints[field.name], value[field.name], (self,))
            except Exception as error:
                raise TypeError(f"Failed converting field {field.name} on dataclass {hint}") from error
            (init_values if field.init else other_values)[field.name] = converted
        decoded = hint(**init_values)
        for name, field_value in other_values.items():
            object.__setattr__(decoded, name, field_value)
        return decoded


class _PayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        json_plain = JSONPlainPayloadConverter(custom_type_converters=[_DataclassFields()])
        super().__init__(
            *(
                json_plain if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = dataclasses.replace(DataConverter.default, payload_converter_class=_PayloadConverter)
