"""The Prometheus provider over TLS and with auth, against a real Prometheus (Debian's binary) serving
HTTPS with a self-signed certificate and HTTP basic auth from its --web.config.file, and a loopback TLS
proxy in front of it that records what reaches it (Prometheus itself ignores tenant headers and bearer
tokens; Mimir, Cortex and Grafana Cloud read them). The production provider is unchanged: the official
prometheus-api-client talks to both."""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import requests

from aicd.activities.analysis import analyze, failed_samples
from aicd.activities.prometheus import PrometheusProvider, ProviderConfigError, read_secret
from aicd.dev.ports import free_port
from aicd.dev.processes import ManagedProcess
from aicd.dev.prometheus import find_prometheus
from aicd.judge import MetricConfig, MetricOutcome, Outcome
from aicd.plan import AnalysisPlan, MetricPlan
from aicd.spec.model import PrometheusConfig, SecretSource

pytestmark = pytest.mark.skipif(
    find_prometheus() is None or shutil.which("openssl") is None,
    reason="needs Debian's prometheus and openssl",
)

USER = "aicd"
PASSWORD_ENV = "AICD_TEST_PROMETHEUS_PASSWORD"
# Any query works without scraped data: one series per track, equal on both sides (so never a pass).
TRACK_QUERY = 'label_replace(vector(0.25), "track", "{{ track }}", "", "")'


def bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # Prometheus' web config wants bcrypt; glibc's crypt makes it

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


@dataclass
class Recorded:
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # Added to Prometheus' answers, as a Thanos or Mimir querier does when a store it asks is down.
    warnings: list[str] = field(default_factory=list)


@dataclass
class TlsPrometheus:
    url: str
    proxy_url: str
    ca_cert: Path
    password: str
    recorded: Recorded


def self_signed(root: Path) -> tuple[Path, Path]:
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def recording_proxy(
    cert: Path, key: Path, upstream: str, password: str, recorded: Recorded
) -> ThreadingHTTPServer:
    """HTTPS on loopback: records each request's path and headers, then asks the real Prometheus with the
    basic auth it needs."""

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            recorded.requests.append((self.path, {key.lower(): value for key, value in self.headers.items()}))
            headers = (
                {"Content-Type": self.headers["Content-Type"]} if self.headers.get("Content-Type") else {}
            )
            answer = httpx.request(
                self.command,
                upstream + self.path,
                content=body,
                headers=headers,
                auth=(USER, password),
                verify=str(cert),
                timeout=10.0,
                trust_env=False,
            )
            content = answer.content
            if recorded.warnings and answer.status_code == 200:
                content = json.dumps({**answer.json(), "warnings": recorded.warnings}).encode()
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


@pytest.fixture(scope="module")
def tls_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPrometheus]:
    root = tmp_path_factory.mktemp("tls-prometheus")
    cert, key = self_signed(root)
    password = secrets.token_hex(12)
    (root / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  {USER}: '{bcrypt(password)}'\n"
    )
    (root / "prometheus.yml").write_text("global:\n  scrape_interval: 1s\nscrape_configs: []\n")
    port = free_port()
    binary = find_prometheus()
    assert binary is not None
    process = ManagedProcess(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={root / 'web.yml'}",
            "--log.level=warn",
        ],
        root / "prometheus.log",
        cwd=root,
    ).start()
    url = f"https://127.0.0.1:{port}"
    recorded = Recorded()
    proxy = recording_proxy(cert, key, url, password, recorded)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if (
                    httpx.get(
                        f"{url}/-/ready", verify=str(cert), auth=(USER, password), trust_env=False
                    ).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.alive(), process.log_tail(800)
            time.sleep(0.2)
        yield TlsPrometheus(url, f"https://127.0.0.1:{proxy.server_address[1]}", cert, password, recorded)
    finally:
        proxy.shutdown()
        proxy.server_close()
        process.stop()


def query(config: PrometheusConfig) -> int:
    """Points of a range query over the last 30 s (the provider as the analysis uses it)."""
    provider = PrometheusProvider(config)
    try:
        now = time.time()
        return len(provider.query_range("vector(1)", now - 30, now, 5.0))
    finally:
        provider.close()


def level_plan(config: PrometheusConfig) -> AnalysisPlan:
    """An analysis of one level read by TRACK_QUERY from the server of `config`."""
    return AnalysisPlan(
        interval_s=5.0,
        alpha=0.01,
        no_data_limit=0.5,
        metrics=[MetricPlan(MetricConfig("level", "continuous", tolerance=0.5), TRACK_QUERY)],
        prometheus=config,
    )


def basic(password_env: str = PASSWORD_ENV) -> dict[str, object]:
    return {"basic_username": USER, "basic_password": SecretSource(env=password_env)}


def test_a_self_signed_certificate_is_refused_by_default(
    tls_prometheus: TlsPrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, tls_prometheus.password)
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        query(PrometheusConfig(url=tls_prometheus.url, **basic()))  # type: ignore[arg-type]
    # In an analysis that is a query error on every metric: never a pass.
    plan = AnalysisPlan(
        interval_s=5.0,
        alpha=0.01,
        no_data_limit=0.5,
        metrics=[MetricPlan(MetricConfig("level", "continuous"), TRACK_QUERY)],
        prometheus=PrometheusConfig(url=tls_prometheus.url, **basic()),  # type: ignore[arg-type]
    )
    now = time.time()
    verdict = analyze(plan, now - 30, now, canary_weight=50.0)
    assert verdict.outcome == Outcome.INCONCLUSIVE
    assert verdict.metric("level").verdict == MetricOutcome.ERROR
    assert "CERTIFICATE_VERIFY_FAILED" in verdict.metric("level").explanation


def test_ca_cert_verifies_it_and_basic_auth_reaches_prometheus(
    tls_prometheus: TlsPrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, tls_prometheus.password)
    verified = PrometheusConfig(url=tls_prometheus.url, ca_cert=str(tls_prometheus.ca_cert), **basic())  # type: ignore[arg-type]
    assert query(verified) >= 6
    # Prometheus checks the password itself: without auth, or with a wrong one, it answers 401.
    with pytest.raises(Exception, match="401"):
        query(PrometheusConfig(url=tls_prometheus.url, ca_cert=str(tls_prometheus.ca_cert)))
    monkeypatch.setenv("AICD_TEST_WRONG_PASSWORD", "not-it")
    with pytest.raises(Exception, match="401"):
        query(
            PrometheusConfig(
                url=tls_prometheus.url,
                ca_cert=str(tls_prometheus.ca_cert),
                **basic("AICD_TEST_WRONG_PASSWORD"),
            )
        )  # type: ignore[arg-type]


def test_insecure_is_the_explicit_way_to_skip_verification(
    tls_prometheus: TlsPrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, tls_prometheus.password)
    assert query(PrometheusConfig(url=tls_prometheus.url, insecure=True, **basic())) >= 6  # type: ignore[arg-type]


def test_a_missing_secret_is_named_without_guessing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AICD_TEST_UNSET_TOKEN", raising=False)
    with pytest.raises(ProviderConfigError, match="environment variable AICD_TEST_UNSET_TOKEN is not set"):
        PrometheusProvider(
            PrometheusConfig(url="https://127.0.0.1:1", bearer=SecretSource(env="AICD_TEST_UNSET_TOKEN"))
        )
    with pytest.raises(ProviderConfigError, match=r"caCert .* is not a file"):
        PrometheusProvider(PrometheusConfig(url="https://127.0.0.1:1", ca_cert=str(tmp_path / "missing.pem")))


def test_headers_bearer_token_and_timeout_reach_the_server(
    tls_prometheus: TlsPrometheus, tmp_path: Path
) -> None:
    token = secrets.token_hex(16)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")  # as a mounted secret often ends
    config = PrometheusConfig(
        url=tls_prometheus.proxy_url,
        ca_cert=str(tls_prometheus.ca_cert),
        headers={"X-Scope-OrgID": "tenant-7"},
        bearer=SecretSource(file=str(token_file)),
        timeout_s=7.0,
    )
    plan = level_plan(config)
    before = len(tls_prometheus.recorded.requests)
    now = time.time()
    verdict = analyze(plan, now - 60, now, canary_weight=50.0)
    level = verdict.metric("level")
    # Judged, not failed: one series per track, identical (so never shown safe: nothing tells them apart).
    assert level.error is None and level.verdict == MetricOutcome.INCONCLUSIVE, level.explanation
    assert "read exactly the same values" in level.explanation
    seen = tls_prometheus.recorded.requests[before:]
    assert len(seen) == 2  # canary and baseline
    for path, headers in seen:
        assert headers["x-scope-orgid"] == "tenant-7"
        assert headers["authorization"] == f"Bearer {token}"
        assert "timeout=7s" in path
    assert sorted("canary" in path for path, _ in seen) == [False, True]  # one query per track
    assert token not in str(verdict.to_dict())  # the secret never reaches the verdict


def test_a_partial_answer_is_not_judged(tls_prometheus: TlsPrometheus) -> None:
    """A Thanos or Mimir querier whose store is down answers 200 with what it has and a warning: the client
    library keeps only the data, so the missing canary error series would read as no errors. The look is an
    error that names the server's warning, never a verdict on part of the data."""
    config = PrometheusConfig(url=tls_prometheus.proxy_url, ca_cert=str(tls_prometheus.ca_cert))
    plan = level_plan(config)
    warning = "partial response: store 10.0.3.7:10901 unavailable"
    tls_prometheus.recorded.warnings = [warning]
    try:
        now = time.time()
        partial = analyze(plan, now - 60, now, canary_weight=50.0).metric("level")
    finally:
        tls_prometheus.recorded.warnings = []
    assert partial.verdict == MetricOutcome.ERROR
    assert partial.error is not None and "incomplete" in partial.error and warning in partial.error
    now = time.time()
    whole = analyze(plan, now - 60, now, canary_weight=50.0).metric("level")
    assert whole.verdict != MetricOutcome.ERROR and whole.error is None


def test_a_token_from_the_environment_is_read_as_a_file_is_and_never_quoted_in_a_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Kubernetes Secret made from a file ends in a newline: read from the environment, the token is stripped
    (a header cannot carry it, and requests' error would quote it whole). A provider error that quotes a secret
    the worker read is masked before it goes into the look's result, which reaches history and status."""
    token = "glc_" + secrets.token_hex(16)
    monkeypatch.setenv(PASSWORD_ENV, token + "\n")
    assert read_secret(SecretSource(env=PASSWORD_ENV), "prometheus bearer token") == token
    quoted = failed_samples(ValueError(f"Invalid leading whitespace in header value: 'Bearer {token}\\n'"))
    assert quoted.error is not None and token not in quoted.error and "***" in quoted.error
