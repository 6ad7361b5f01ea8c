"""The embedded Prometheus (Debian's binary) scraping real demo apps that the reconciler runs."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from aicd.dev.loadgen import LoadGenerator
from aicd.dev.processes import wait_gone
from aicd.dev.prometheus import EmbeddedPrometheus, find_prometheus
from aicd.dev.reconciler import LocalReconciler
from tests.test_embedded_local import BAD, GOOD, VALUES, GitOpsRepo, make_artifacts, values

needs_prometheus = pytest.mark.skipif(
    find_prometheus() is None,
    reason="no prometheus binary (apt-get install prometheus, or set AICD_PROMETHEUS_BIN); CI installs it",
)


def _series_by_track(client: PrometheusConnect, query: str) -> dict[str, list[dict[str, Any]]]:
    end = datetime.now()
    result = client.custom_query_range(query, start_time=end - timedelta(minutes=1), end_time=end, step="1s")
    by_track: dict[str, list[dict[str, Any]]] = {}
    for series in result:
        by_track.setdefault(series["metric"].get("track", "?"), []).append(series)
    return by_track


@needs_prometheus
def test_prometheus_scrapes_stable_and_canary_and_fails_once_stopped(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path)
    artifacts = make_artifacts(tmp_path, {GOOD: "error_ratio: 0.0\n", BAD: "error_ratio: 0.5\n"})
    repo.commit({VALUES: values(GOOD, BAD, 50)}, "canary 50")
    prom = EmbeddedPrometheus(tmp_path / "prometheus", scrape_interval="1s")
    url = prom.start()
    prom_pid = prom.pid
    try:
        # The reconciler keeps Prometheus' file_sd in step with the processes it runs.
        with (
            LocalReconciler(
                repo.bare, "main", {"dev": VALUES}, artifacts, tmp_path / "state", sd_file=prom.sd_file
            ) as reconciler,
            LoadGenerator(lambda: reconciler.proxy_urls().values(), rate=40) as load,
        ):
            client = PrometheusConnect(url=url, disable_ssl=True)
            # Prometheus' discovery manager passes target changes on at most every 5 s: allow for that.
            deadline = time.monotonic() + 20
            while True:
                by_track = _series_by_track(client, 'http_requests_total{app="demo",code="200"}')
                errors = client.custom_query('sum by (track) (http_requests_total{code="500"})')
                failing = {e["metric"]["track"]: float(e["value"][1]) for e in errors}
                if set(by_track) == {"stable", "canary"} and failing.get("canary", 0) > 0:
                    break
                assert time.monotonic() < deadline, f"no stable+canary series yet: {by_track} {failing}"
                time.sleep(0.5)
            assert load.stats().sent > 0
            (stable,) = by_track["stable"]
            (canary,) = by_track["canary"]
            assert stable["metric"]["version"] == GOOD and canary["metric"]["version"] == BAD
            assert stable["metric"]["target"] == "dev"  # label from the reconciler's file_sd entry
            assert len(stable["values"]) >= 1
            assert failing.get("stable", 0) == 0  # the good version serves no errors
    finally:
        prom.stop()
    assert prom_pid is not None and wait_gone([prom_pid]) == []
    # A stopped Prometheus makes queries fail loudly (the analysis must notice, not read "no data").
    # Retry(total=0): the client's default retries with backoff would only make this take seconds.
    with pytest.raises(requests.exceptions.ConnectionError):
        PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0)).custom_query("up")


def test_config_and_static_targets(tmp_path: Path) -> None:
    extra = tmp_path / "reconciler-sd.json"
    prom = EmbeddedPrometheus(tmp_path / "prom", scrape_interval="2s", extra_sd_files=[extra])
    config = json.loads(prom.config_text())
    (job,) = config["scrape_configs"]
    assert job["scrape_interval"] == "2s"
    assert job["file_sd_configs"][0]["files"] == [str(prom.sd_file), str(extra)]
    prom.set_targets(["127.0.0.1:9001", ("127.0.0.1:9002", {"track": "canary"})], labels={"target": "t"})
    assert json.loads(prom.sd_file.read_text()) == [
        {"targets": ["127.0.0.1:9001"], "labels": {"target": "t"}},
        {"targets": ["127.0.0.1:9002"], "labels": {"target": "t", "track": "canary"}},
    ]
