"""The Prometheus metrics provider: range queries over the HTTP API of Prometheus or a compatible server
(Thanos, Mimir, Cortex, Grafana Cloud), through the official ``prometheus-api-client``.

TLS certificates are verified: against the system's CAs, or against ``caCert`` (a PEM file on the worker
for a private CA or a self-signed certificate); only ``insecure: true`` turns that off. Secrets -- a bearer
token or a basic-auth password -- are read from the worker's environment or a file at each use, never from
the spec, so the delivery's history, status and logs hold only their names. ``headers`` go with every query
(``X-Scope-OrgID`` for multi-tenant Mimir and Cortex).
"""

from __future__ import annotations

import math
import os
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.exceptions import InsecureRequestWarning
from urllib3.util.retry import Retry

from aicd.judge import Series
from aicd.redact import remember_secret
from aicd.spec.model import PrometheusConfig, SecretSource


class MetricsProvider(Protocol):
    """What the analysis needs of a metrics backend: one series per query over a time range, or one per
    value of a label (a metric judged per pod)."""

    def query_range(
        self, query: str, start: float, end: float, step: float, *, one_series: bool = False
    ) -> Series: ...

    def query_range_by(
        self, query: str, label: str, start: float, end: float, step: float
    ) -> dict[str, Series]: ...


class ProviderConfigError(RuntimeError):
    """The provider cannot be set up as configured (a missing secret or CA file); the message names what."""


class UnusableResult(RuntimeError):
    """The server answered, but not with data a verdict may rest on (a partial answer, several series where
    one value per track is compared); the message says why and what to change."""


MAX_WARNINGS_SHOWN = 2


class PrometheusProvider:
    def __init__(self, config: PrometheusConfig) -> None:
        self._config = config
        session = requests.Session()
        # A CA file replaces the system's CAs for this server; `insecure` is the only way to skip the check.
        session.verify = False if config.insecure else (config.ca_cert or True)
        if config.ca_cert and not Path(config.ca_cert).is_file():
            raise ProviderConfigError(f"prometheus caCert {config.ca_cert} is not a file on this worker")
        headers = dict(config.headers)
        auth: tuple[str, str] | None = None
        if config.bearer is not None:
            headers["Authorization"] = f"Bearer {read_secret(config.bearer, 'prometheus bearer token')}"
        if config.basic_username is not None and config.basic_password is not None:
            auth = (
                config.basic_username,
                read_secret(config.basic_password, "prometheus basic-auth password"),
            )
        # A partial answer (a Thanos store or a Mimir querier down, a query that hit a limit) comes with
        # `warnings` in a 200 response, which the client drops: missing error series would read as no errors.
        session.hooks["response"].append(_refuse_partial_answer)
        # No client-side retries: a look that cannot reach Prometheus is a no-data look; the next look retries.
        self._client = PrometheusConnect(
            url=config.url,
            headers=headers,
            auth=auth,
            session=session,
            retry=Retry(total=0),
            timeout=max(1, math.ceil(config.timeout_s)),
        )

    def query_range(
        self, query: str, start: float, end: float, step: float, *, one_series: bool = False
    ) -> Series:
        """One series for a query: several result series are summed per timestamp (counts of events add up
        over pods). With `one_series` (a level: latency, CPU, memory) several series are refused: a sum of
        nine baseline pods' latencies against one canary pod's would make any canary look fast."""
        result = self._range(query, start, end, step)
        if one_series and len(result) > 1:
            labels = ", ".join(_labels(series) for series in result[:3])
            raise UnusableResult(
                f"the query returned {len(result)} series ({labels}{', ...' if len(result) > 3 else ''}) where"
                " one value per track is compared: aggregate it (avg(...), max(...), or"
                " histogram_quantile(q, sum by (le) (...)))"
            )
        return _summed(result)

    def query_range_by(
        self, query: str, label: str, start: float, end: float, step: float
    ) -> dict[str, Series]:
        """One series per value of ``label`` (a pod's name): result series that share it are summed, as
        ``query_range`` sums them all; series without the label are left out (they belong to no pod)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for series in self._range(query, start, end, step):
            value = series.get("metric", {}).get(label)
            if value:
                groups.setdefault(str(value), []).append(series)
        return {value: _summed(members) for value, members in sorted(groups.items())}

    def _range(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        with warnings.catch_warnings():
            if self._config.insecure:  # asked for in the spec: one warning per query would flood the log
                warnings.simplefilter("ignore", InsecureRequestWarning)
            result: list[dict[str, Any]] = self._client.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(start, UTC),
                end_time=datetime.fromtimestamp(max(end, start + step), UTC),
                step=f"{step:g}s",
                params={"timeout": f"{self._config.timeout_s:g}s"},
            )
        return result

    def instant(self, query: str) -> float | None:
        """The query's value now (several series summed); None when it has none."""
        with warnings.catch_warnings():
            if self._config.insecure:
                warnings.simplefilter("ignore", InsecureRequestWarning)
            result = self._client.custom_query(query, params={"timeout": f"{self._config.timeout_s:g}s"})
        values = [float(series["value"][1]) for series in result if "value" in series]
        values = [value for value in values if not math.isnan(value)]
        return sum(values) if values else None

    def close(self) -> None:
        self._client.close()


def _refuse_partial_answer(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    """A response hook: an answer that carries `warnings` is not complete enough to judge a canary by."""
    if response.status_code != 200 or b'"warnings"' not in response.content:
        return
    try:
        found = response.json().get("warnings") or []
    except ValueError:
        return  # not JSON: the client says so
    if found:
        shown = "; ".join(str(warning)[:200] for warning in found[:MAX_WARNINGS_SHOWN])
        raise UnusableResult(f"the server's answer is incomplete or unreliable ({shown}): not judged")


def _labels(series: dict[str, Any]) -> str:
    metric = series.get("metric", {})
    return "{" + ",".join(f"{key}={value!r}" for key, value in sorted(metric.items())) + "}"


def _summed(result: list[dict[str, Any]]) -> Series:
    """The series of a range query's result summed per timestamp (NaN points left out)."""
    totals: dict[float, float] = {}
    for series in result:
        for timestamp, value in series.get("values", []):
            number = float(value)
            if math.isnan(number):
                continue
            totals[float(timestamp)] = totals.get(float(timestamp), 0.0) + number
    stamps = sorted(totals)
    return Series(tuple(stamps), tuple(totals[stamp] for stamp in stamps))


def read_secret(source: SecretSource, what: str) -> str:
    """The secret's value from the worker's environment or a file; the error names where it looked, never
    the value. Each value read is masked from then on (aicd.redact.remember_secret), a rotated one too."""
    if source.env:
        # Stripped as a file's is: a Kubernetes Secret made from a file often ends in a newline, which no
        # header may carry (requests would refuse it, quoting the whole header in its error).
        value = os.environ.get(source.env, "").strip()
        if not value:
            raise ProviderConfigError(f"{what}: environment variable {source.env} is not set on this worker")
        return remember_secret(value)
    if source.file:
        try:
            value = Path(source.file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ProviderConfigError(f"{what}: cannot read file {source.file}: {error.strerror}") from None
        if not value:
            raise ProviderConfigError(f"{what}: file {source.file} is empty")
        return remember_secret(value)
    raise ProviderConfigError(f"{what}: no environment variable or file given")
