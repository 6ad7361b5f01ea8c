"""`aicd demo` on a busy laptop: with both cores kept busy by two busy-loop processes the demo still exits 0
when the releases behave (timeouts are retried and reported as load, never as a failure). Real Temporal, Git,
Prometheus and processes, as in tests/test_demo.py (slow: a whole demo under load). That the final check
fails a release serving another version than Git says is proven in tests/test_demo.py."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aicd.cli.demo_view import traffic_lines
from aicd.dev.demo import Release, Traffic
from aicd.dev.demo_app import ConfigError, parse_config
from tests.conftest import REPO_ROOT, aicd_env

BUSY_LOOP = "while True: pass"


@contextlib.contextmanager
def both_cores_busy() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two processes spinning at 100% CPU (a `stress -c 2`), stopped whatever happens."""
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], start_new_session=True) for _ in range(2)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hog.pid, signal.SIGKILL)
            hog.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(900)  # a whole demo on two starved cores
def test_demo_exits_0_under_load_when_the_releases_behave(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "aicd", "demo", "--yes", "--state-dir", str(tmp_path)]
    argv += ["--port", "0", "--ui-port", "0", "--rate", "10"]
    with both_cores_busy() as hogs:
        done = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env=aicd_env(COLUMNS="100"),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert all(hog.poll() is None for hog in hogs), "the load ran for the whole demo"
    out = done.stdout
    assert done.returncode == 0, out[-6000:] + done.stderr[-2000:]
    assert "demo OK" in out and "demo NOT as expected" not in out
    # The final check says what it does while it does it, per target.
    for target in ("staging", "prod-a", "prod-b"):
        assert re.search(rf"checked {target}: \d+ answers from \w+, as Git says", out), out[-4000:]
    # The links are whole lines a terminal can open, and the closing words say how to keep them working.
    assert re.search(r"^dashboard\s+http://127\.0\.0\.1:\d+/?$", out, re.M), out[-4000:]
    assert re.search(r"^Prometheus\s+http://\S+g0\.range_input=15m$", out, re.M), out[-4000:]
    assert "`aicd demo --keep` keeps it up" in out


# --- fast checks ----------------------------------------------------------------------------------------------


def _plain(lines: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(line.plain, str(line.style)) for line in lines]


def test_live_view_tells_a_slow_machine_from_a_bad_release() -> None:
    versions = {"5146fd5": "1.1", "9abc012": "1.2"}
    # A good release on a starved machine: many requests unanswered, none of its own answers an error.
    slow = Traffic(20.0, 0.03, 0.56, {"5146fd5": 1.0}, {"5146fd5": 0.0})
    (served, machine) = _plain(traffic_lines(slow, versions))
    assert served == ("traffic (last 5 s): 20 req/s · answered by: 1.1 (5146fd5) 100%", "")
    assert (
        machine[0].startswith("slow machine: 56% of requests got no answer in time")
        and machine[1] == "yellow"
    )
    assert "5xx" not in served[0] and "no answer" not in served[0]
    # A bad release: its own answers fail; shown per version, in red, with no load line on a quiet machine.
    bad = Traffic(20.0, 0.1, 0.0, {"5146fd5": 0.7, "9abc012": 0.3}, {"5146fd5": 0.0, "9abc012": 0.31})
    ((text, style),) = _plain(traffic_lines(bad, versions))
    assert "1.2 (9abc012) 30% (5xx 31.0%)" in text and "1.1 (5146fd5) 70% ·" in text and style == "red"


def test_the_demo_app_answers_as_the_version_it_claims() -> None:
    assert parse_config({"claims_version": "c0ffee0"}).claims_version == "c0ffee0"
    assert parse_config({}).claims_version is None
    with pytest.raises(ConfigError, match="claims_version must be a non-empty string"):
        parse_config({"claims_version": 7})
    assert "claims_version: 'c0ffee0'" in Release("9", "b", "s", 0.0, claims_version="c0ffee0").app_yaml("a")


def test_summary_keeps_load_apart_from_release_errors(tmp_path: Path) -> None:
    from collections import Counter

    from rich.console import Console

    from aicd.cli.demo_view import render_summary
    from aicd.dev.demo import DemoReport
    from aicd.dev.loadgen import LoadStats

    traffic = LoadStats(
        sent=1000,
        failed=12,
        by_status=Counter({200: 900, 500: 60, 502: 28}),
        by_version=Counter({"5146fd5": 700, "9abc012": 260, "?": 28}),
        errors_by_version=Counter({"9abc012": 60}),
    )
    report = DemoReport(
        state_dir=tmp_path,
        versions={"5146fd5": "1.1", "9abc012": "1.2"},
        traffic=traffic,
        load_notes=[
            "prod-a: 3 of 33 requests got no answer in time (ReadTimeout 3): a busy machine, retried"
        ],
    )
    console = Console(width=300, record=True, color_system=None)
    console.print(render_summary(report), soft_wrap=True)
    text = console.export_text()
    assert "5xx from the releases: 1.2 (9abc012) 60; not answered in time (load): 40" in text
    assert "slow machine (not a failure): prod-a: 3 of 33 requests got no answer in time" in text
