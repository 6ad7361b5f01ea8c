"""The dashboard without a browser: what it reads from recorded and live Temporal histories, what its pages
draw from that, who may act and how (sessions, tokens, proxy headers, CSRF), its settings, and the commits
and diffs it reads from a real Git repository. The browser test (test_dashboard_browser.py) runs it whole."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.requests import Request
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from aicd.cli.dashboard import exposure_problem
from aicd.client import handle_for, send_action, start_delivery
from aicd.dashboard import Dashboard, DashboardSettings, SettingsError, charts, standalone_app
from aicd.dashboard import gitops as dashboard_gitops
from aicd.dashboard import service as dashboard_service
from aicd.dashboard.app import Urls, Viewer
from aicd.dashboard.auth import (
    CSRF_COOKIE,
    Identity,
    NotAuthenticated,
    csrf_problem,
    csrf_token,
    origin_problem,
    read_session,
    request_identity,
    sign_session,
    steering_refusal,
)
from aicd.dashboard.gitops import GitOpsReader, commit_url, parse_diff, repo_path
from aicd.dashboard.history import DeliveryDigest, HistoryStore, Look, RolloutDigest, StepMark
from aicd.dashboard.live import Hub
from aicd.dashboard.settings import TokenTable, load_tokens
from aicd.dashboard.views import build_view, fleet_grid, metric_chart, status_from_history
from aicd.judge import JudgeConfig, MetricConfig, MetricSamples, Series, judge
from aicd.messages import HumanAction, TargetStatus, Trigger
from aicd.people import Roster
from aicd.redact import RedactingFormatter
from aicd.testing.engine import (
    commits,
    git,
    human_commit,
    make_repo,
    plan_from,
    running_worker,
    spec_document,
    temporal_env,
    wait_for,
)
from tests.conftest import RunAicd, aicd_env

__all__ = ["temporal_env"]

HISTORIES = Path(__file__).parent / "histories"


async def recorded_digest() -> DeliveryDigest:
    """The recorded replay scenario: approval by alice, pause and resume by oncall, a `pause: {}` released,
    a second stage aborted by carol and rolled back (release scope)."""
    history = WorkflowHistory.from_json("delivery", (HISTORIES / "gates" / "delivery.json").read_text())
    digest = DeliveryDigest()
    half = len(history.events) // 2
    await digest.feed(history.events[:half], DataConverter.default)  # fed in two parts, as a live run is
    await digest.feed(history.events[half:], DataConverter.default)
    return digest


# --- histories -------------------------------------------------------------------------------------------------


async def test_the_digest_of_a_recorded_delivery_holds_its_facts() -> None:
    digest = await recorded_digest()
    assert digest.input is not None and digest.input.plan.app == "replay"
    assert digest.close_kind == "completed" and digest.result is not None and digest.result.phase == "aborted"
    assert [(a.kind, a.action.actor) for a in digest.actions] == [
        ("approve", "alice"),
        ("pause", "oncall"),
        ("resume", "oncall"),
        ("resume", "oncall"),
        ("abort", "carol"),
    ]
    assert [state for _at, state in [(at, s.state) for at, s in digest.progress["a"]]] == [
        "progressing",
        "paused",
        "progressing",
        "awaiting-resume",
        "progressing",
        "progressing",
        "promoted",
    ]
    assert [s.weight for _at, s in digest.progress["a"]] == [10, 10, 10, 10, 10, 100, 100]
    assert [r.targets for r in digest.rollbacks] == [["b", "a"]]  # release scope: newest stage first
    assert digest.rollbacks[0].reason == "enough"
    assert {t: (c.stage, c.workflow_id) for t, c in digest.children.items()} == {
        "a": ("one", "delivery-replay-06875341bf43--one--a"),
        "b": ("two", "delivery-replay-06875341bf43--two--b"),
    }
    assert all(child.run_id and child.started for child in digest.children.values())
    phases = [phase for _at, phase in digest.phases]
    assert phases[0] == "awaiting-approval" and phases[-2:] == ["rolling-back", "aborted"]
    times = [at for at, _ in digest.phases]
    assert times == sorted(times)


async def test_a_recorded_delivery_draws_its_timeline_with_pauses_actions_and_rollbacks() -> None:
    digest = await recorded_digest()
    status = status_from_history(digest, "")
    assert status.phase == "aborted"
    assert status.targets["a"].state == "rolled-back"  # promoted, then rolled back with the release
    view = build_view(
        status,
        digest,
        {},
        {},
        now=datetime.now(UTC),
        commit_template=None,
        status_source="history",
        running=False,
    )
    assert view.available == [] and view.notes  # ended; and it says the page comes from history
    assert [stage.name for stage in view.stages] == ["one", "two"]
    assert view.stages[0].approvers == ["alice"] and view.stages[0].approved_by == []  # not in the history
    timeline = view.timeline
    assert timeline is not None
    lanes = {lane.target: lane for lane in timeline.lanes}
    assert [p.weight for p in lanes["a"].points] == [0, 10, 10, 10, 10, 10, 100, 100, 0]  # ... rolled back
    assert [p.state for p in lanes["a"].points][-1] == "rolled-back"
    assert [pause.kind for pause in lanes["a"].pauses] == ["paused", "awaiting-resume"]
    assert [m.label.split(":")[0] for m in lanes["a"].steps] == ["1", "2", "3"]
    assert len(lanes["a"].rollbacks) == len(lanes["b"].rollbacks) == 1
    assert [(m.kind, m.actor) for m in timeline.actions] == [(a.kind, a.action.actor) for a in digest.actions]
    xs = [p.x for lane in timeline.lanes for p in lane.points]
    assert min(xs) >= timeline.plot_left and max(xs) <= timeline.plot_right
    # Every point sits within its lane, weight 0 at the lane's base line and 100 at its top line.
    for lane in timeline.lanes:
        for point in lane.points:
            assert point.y == pytest.approx(
                lane.baseline_y - (lane.baseline_y - lane.full_y) * point.weight / 100
            )


async def recorded_lanes(scenario: str, with_steps: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """Per target of a recorded gates scenario: its timeline lane as (weight, state, step) points, its pauses
    and its step markers, drawn from the delivery's history and (with_steps) the rollouts' own."""
    folder = HISTORIES / scenario
    digest = DeliveryDigest()
    history = WorkflowHistory.from_json("delivery", (folder / "delivery.json").read_text())
    await digest.feed(history.events, DataConverter.default)
    steps: dict[str, list[StepMark]] = {}
    for target in ("a", "b") if with_steps else ():
        rollout = RolloutDigest()
        history = WorkflowHistory.from_json(target, (folder / f"{target}.json").read_text())
        await rollout.feed(history.events, DataConverter.default)
        steps[target] = rollout.steps
    status = status_from_history(digest, "")
    view = build_view(
        status, digest, {}, {}, steps=steps, now=datetime.now(UTC), commit_template=None, running=False
    )
    assert view.timeline is not None
    return {
        lane.target: [
            [(p.weight, p.state, p.step) for p in lane.points],
            [pause.kind for pause in lane.pauses],
            [marker.label for marker in lane.steps],
            (status.targets[lane.target].state, len(status.targets[lane.target].commits)),
        ]
        for lane in view.timeline.lanes
    }


async def test_rollouts_that_report_only_their_waits_draw_the_same_timeline() -> None:
    """The `progress` recording is the `gates` scenario with rollouts that report to the delivery only as
    they start waiting and end with their status in their result: its timeline, drawn from the delivery's
    history and the rollouts' step commits, is the one drawn from the older run's report after every step."""
    before = await recorded_lanes("gates")
    after = await recorded_lanes("progress")
    assert after == before
    weights = [weight for weight, _state, _step in after["a"][0]]
    assert weights == [0, 10, 10, 10, 10, 10, 10, 100, 100, 100, 0]
    assert after["a"][1] == ["paused", "awaiting-resume"]
    assert after["a"][3] == ("rolled-back", 3)  # its commits came with the rollout's result
    # Without the rollouts' own histories the steps they did not report are missing.
    assert (await recorded_lanes("progress", with_steps=False))["a"][2] != after["a"][2]


async def test_history_is_read_incrementally_and_agrees_with_a_full_read(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = temporal_env.client
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"a.yaml": "image: {tag: v0}\n"})
    document = spec_document(
        "history-read",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [
            {
                "name": "one",
                "targets": ["a"],
                "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]}},
            }
        ],
    )
    plan = plan_from(document, revision)
    store = HistoryStore(client)
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue, index_search_attributes=False)
        await wait_for(
            client, plan.delivery_id, lambda s: "a" in s.targets and s.targets["a"].state == "awaiting-resume"
        )
        run_id = (await client.get_workflow_handle(plan.delivery_id).describe()).run_id
        first = await store.delivery(plan.delivery_id, run_id)
        read_before = store.events_read
        assert [s.state for _at, s in first.progress["a"]][-1] == "awaiting-resume"
        assert first.closed is None
        await send_action(client, plan.delivery_id, "resume", HumanAction("oncall", "go"))
        await client.get_workflow_handle(plan.delivery_id).result()
        later = await store.delivery(plan.delivery_id, run_id)
    total = len((await client.get_workflow_handle(plan.delivery_id).fetch_history()).events)
    assert later is first and later.closed is not None and later.result is not None
    assert store.events_read == total  # the second read fetched only the new events
    assert store.events_read - read_before < total
    fresh = DeliveryDigest()
    await fresh.feed(
        (await client.get_workflow_handle(plan.delivery_id).fetch_history()).events, client.data_converter
    )
    assert [(s.state, s.weight) for _at, s in later.progress["a"]] == [
        (s.state, s.weight) for _at, s in fresh.progress["a"]
    ]
    assert [(a.kind, a.action.actor) for a in later.actions] == [("resume", "oncall")]
    await store.delivery(plan.delivery_id, run_id)
    assert store.events_read == total  # a closed run is never read again
    assert [c["Aicd-Step"] for c in commits(gitops) if "Aicd-Step" in c][-1] == "one/a/promote"


# --- charts -------------------------------------------------------------------------------------------------


def test_time_ticks_fall_on_round_clock_times() -> None:
    start = datetime(2026, 1, 1, 10, 0, 7, tzinfo=UTC).timestamp()
    scale = charts.Linear(start, start + 100, 0, 1000)
    ticks = charts.time_ticks(start, start + 100, scale)
    assert [t.label for t in ticks] == [
        "10:00:15",
        "10:00:30",
        "10:00:45",
        "10:01:00",
        "10:01:15",
        "10:01:30",
        "10:01:45",
    ]
    relative = charts.time_ticks(start, start + 25, charts.Linear(start, start + 25, 0, 100), relative=True)
    assert [t.label for t in relative] == ["+0s", "+5s", "+10s", "+15s", "+20s", "+25s"]
    assert relative[0].position == 0 and relative[-1].position == 100


def test_log_ticks_and_scales() -> None:
    scale = charts.Log(0.5, 2000, 100, 0)
    labels = [t.label for t in charts.log_ticks(0.5, 2000, scale)]
    assert labels == ["1x", "10x", "100x", "1000x"]
    wide = [t.label for t in charts.log_ticks(0.001, 10000, charts.Log(0.001, 10000, 100, 0))]
    assert wide == ["0.01x", "1x", "100x", "10kx"]  # seven decades: every second power of ten
    assert scale(1) > scale(10) > scale(1000) and scale(1e9) == scale(2000)  # clamped to the range
    assert [t.label for t in charts.log_ticks(0.8, 1.6, charts.Log(0.8, 1.6, 1, 0))] == ["1x", "1.2x", "1.5x"]


def test_paths_hold_steps_and_break_on_missing_looks() -> None:
    assert charts.step_path([(0, 50), (10, 20), (20, 20)], 30) == "M0,50 H10 V20 H20 H30"
    assert charts.line_path([(0, 1), None, (2, 3), (4, 5)]) == "M0,1 M2,3 L4,5"
    band = charts.band_path([(0, 1), (1, 1), None, (3, 1)], [(0, 5), (1, 5), None, (3, 5)])
    assert band.count("Z") == 2  # two runs of known bounds; the lone look becomes a thin bar


def test_numbers_read_well() -> None:
    assert [charts.format_number(v) for v in (0.0045, 12.345, 0, 25000, None, math.inf)] == [
        "0.0045",
        "12.3",
        "0",
        "25k",
        "-",
        "-",
    ]
    assert charts.format_ratio(999.9999) == "1000x"


def _series(rng: np.random.Generator, level: float, start: float, seconds: int) -> Series:
    times = [start + t for t in range(0, seconds, 2)]
    return Series.from_lists(times, [level * (1 + 0.05 * rng.standard_normal()) for _ in times])


def test_a_metric_chart_draws_the_judges_bounds_and_the_tolerance() -> None:
    rng = np.random.default_rng(7)
    config = JudgeConfig(metrics=(MetricConfig("latency", "continuous", tolerance=0.1),), interval_s=10)
    start = 1_800_000_000.0
    looks = []
    for seconds in (30, 60, 90, 120):
        samples = {
            "latency": MetricSamples(_series(rng, 0.2, start, seconds), _series(rng, 0.1, start, seconds))
        }
        verdict = judge(samples, config, canary_weight=50)
        looks.append(Look(datetime.fromtimestamp(start + seconds, UTC), start, start + seconds, 50, verdict))
    chart = metric_chart("latency", start, looks)
    assert chart.verdict == "fail" and "latency on the canary" in chart.explanation
    assert [look.seconds for look in chart.looks] == [30, 60, 90, 120]
    assert [look.canary for look in chart.looks] == [look.verdict.metrics[0].canary_value for look in looks]
    ratio = chart.panels[1]
    assert [value for _y, value in ratio.tolerance] == [1.1]
    assert ratio.band and ratio.bad_zone is not None
    tolerance_y = ratio.tolerance[0][0]
    # The canary is twice the baseline: every estimate lies in the regression zone (above the tolerance).
    assert all(look.estimate_y is not None and look.estimate_y < tolerance_y for look in chart.looks)
    assert all(look.ci_low is not None and look.ci_low > 1.1 for look in chart.looks[-1:])


def test_a_fleet_grid_stands_each_cell_for_several_sites_when_large() -> None:
    fleet = TargetStatus(
        "edge",
        "prod",
        "edge",
        sites_total=10_000,
        sites_by_state={"updated": 6000, "failed": 15, "updating": 100},
        failed_sites=["pop-1", "pop-2"],
    )
    grid = fleet_grid(fleet)
    assert grid.per_cell == 10 and grid.columns == 50
    assert grid.counts == [("updated", 6000), ("updating", 100), ("failed", 15), ("pending", 3885)]
    assert grid.cells.count("updated") == 600 and grid.cells.count("failed") == 2
    assert grid.cells[:1] == ["updated"] and grid.cells[-1] == "pending"
    small = fleet_grid(TargetStatus("e", "p", "edge", sites_total=3, sites_by_state={"updated": 3}))
    assert small.per_cell == 1 and small.cells == ["updated"] * 3 and small.columns == 3


async def test_a_fleet_rolled_back_shows_from_history_no_site_on_the_release() -> None:
    """Read from its history (no worker answers), a fleet the delivery rolled back counts the sites it had moved
    as rolled back, as the status query does: the history holds the fleet's last counts, from before."""
    history = WorkflowHistory.from_json(
        "delivery", (HISTORIES / "fleet-rollback" / "delivery.json").read_text()
    )
    digest = DeliveryDigest()
    await digest.feed(history.events, DataConverter.default)
    fleet = status_from_history(digest, "").targets["pops"]
    assert fleet.state == "rolled-back" and fleet.weight == 0
    assert fleet.sites_by_state == {"rolled-back": 1, "failed": 1, "pending": 2}
    assert fleet_grid(fleet).cells == ["rolled-back", "failed", "pending", "pending"]


async def test_the_page_regions_render_the_view(tmp_path: Path) -> None:
    """Every region of the delivery page renders from a view; an edge fleet becomes a grid of sites."""
    digest = await recorded_digest()
    status = status_from_history(digest, "")
    status.targets["b"] = TargetStatus(
        "b",
        "two",
        "edge",
        "progressing",
        sites_total=40,
        sites_by_state={"updated": 30, "failed": 2},
        failed_sites=["pop-7"],
    )
    view = build_view(status, digest, {}, {}, now=datetime.now(UTC), commit_template=None, running=False)
    board = Dashboard(_settings(tmp_path), _unreachable)
    viewer = Viewer(Identity("alice", "session"), "t" * 43, "c" * 43, False, Urls(""), "/")
    regions = board.delivery_regions(view, viewer)
    fleet = regions["fleets"]
    assert fleet.count('class="site site-updated"') == 30 and fleet.count('class="site site-failed"') == 2
    assert fleet.count('class="site site-pending"') == 8 and "pop-7" in fleet
    assert regions["graph"].count('<li class="node') == 2
    assert regions["actions"].count("<tr data-kind=") == 5
    assert "This delivery has ended" in regions["controls"]


# --- who may act ---------------------------------------------------------------------------------------------


def _request(
    headers: dict[str, str] | None = None, client: str = "127.0.0.1", cookies: str = "", scheme: str = "https"
) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if cookies:
        raw.append((b"cookie", cookies.encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": raw,
        "client": (client, 1234),
        "server": ("dash.example", 443 if scheme == "https" else 80),
        "scheme": scheme,
        "query_string": b"",
        "root_path": "",
    }
    return Request(scope)


def _settings(tmp_path: Path, **overrides: Any) -> DashboardSettings:
    tokens = tmp_path / "tokens.yaml"
    digest = "sha256:" + hashlib.sha256(b"bob-token-0123456789abcdef").hexdigest()
    tokens.write_text(f"alice: alice-token-0123456789abcdef\nbob: {digest}\n")
    tokens.chmod(0o600)
    env = {"AICD_DASHBOARD_TOKENS_FILE": str(tokens), "AICD_DASHBOARD_TRUSTED_PROXIES": "10.0.0.0/24"}
    return DashboardSettings.from_env({**env, **overrides})


def test_identity_from_a_bearer_token_a_trusted_proxy_or_a_session(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.read_signed_in  # sign-in is set up, so reading needs it by default
    bearer = request_identity(_request({"Authorization": "Bearer alice-token-0123456789abcdef"}), settings)
    assert bearer == Identity("alice", "token") and not bearer.ambient
    hashed = request_identity(_request({"Authorization": "Bearer bob-token-0123456789abcdef"}), settings)
    assert hashed == Identity("bob", "token")
    with pytest.raises(NotAuthenticated):
        request_identity(_request({"Authorization": "Bearer wrong-token-0123456789abc"}), settings)
    proxied = {"X-Forwarded-User": "carol@example.com"}
    assert request_identity(_request(proxied, client="10.0.0.7"), settings) == Identity(
        "carol@example.com", "proxy"
    )
    # Two of them (the client's, then the one a proxy added instead of replacing it): which is whose is unknown.
    twice = _request(client="10.0.0.7")
    twice.scope["headers"] += [(b"x-forwarded-user", b"mallory"), (b"x-forwarded-user", b"carol@example.com")]
    assert request_identity(twice, settings) is None
    # The same header from anywhere else is anyone's to write: ignored.
    assert request_identity(_request(proxied, client="192.0.2.9"), settings) is None
    assert (
        request_identity(_request({**proxied, "X-Forwarded-For": "10.0.0.7"}, client="192.0.2.9"), settings)
        is None
    )
    session = sign_session("alice", "alice-token-0123456789abcdef", settings.session_key)
    assert request_identity(_request(cookies=f"aicd_session={session}"), settings) == Identity(
        "alice", "session"
    )
    # A session names the identity of the token it was signed in with, and no other.
    dave = sign_session("dave", "alice-token-0123456789abcdef", settings.session_key)
    assert request_identity(_request(cookies=f"aicd_session={dave}"), settings) is None
    assert request_identity(_request(cookies=f"aicd_session={session[:-2]}xx"), settings) is None


def test_sessions_expire_and_cannot_be_forged() -> None:
    key, token = b"k" * 32, "alice-token-0123456789abcdef"
    tokens = TokenTable({hashlib.sha256(token.encode()).hexdigest(): "alice"})
    value = sign_session("alice", token, key, now=1000.0, ttl_s=60)
    assert read_session(value, key, tokens, now=1030.0) == "alice"
    assert read_session(value, key, tokens, now=1061.0) is None
    assert read_session(value, b"x" * 32, tokens, now=1030.0) is None
    body, _, mac = value.partition(".")
    forged_body = sign_session("mallory", token, b"x" * 32, now=1000.0).partition(".")[0]
    assert read_session(f"{forged_body}.{mac}", key, tokens, now=1030.0) is None
    assert read_session("garbage", key, tokens) is None and read_session(f"{body}.", key, tokens) is None


def test_csrf_needs_the_token_of_this_browser_and_session_and_the_same_origin(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    host = {"Host": "dash.example"}
    jar = f"{CSRF_COOKIE}={'j' * 43}"
    token, cookie, new = csrf_token(_request(host, cookies=jar), settings)
    assert (cookie, new) == ("j" * 43, False) and token != cookie
    ok = _request({"Origin": "https://dash.example", **host}, cookies=jar)
    assert csrf_problem(ok, token, settings) is None
    assert "CSRF token" in (csrf_problem(ok, "other", settings) or "")
    assert "CSRF token" in (
        csrf_problem(ok, cookie, settings) or ""
    )  # the cookie itself is no longer the token
    assert "CSRF token" in (csrf_problem(_request(host), token, settings) or "")
    # Another cookie jar's token is refused ...
    other = f"{CSRF_COOKIE}={'o' * 43}"
    other_token, _, _ = csrf_token(_request(host, cookies=other), settings)
    assert "CSRF token" in (csrf_problem(ok, other_token, settings) or "")
    # ... and so is another session's, even with the CSRF cookie planted in this browser (by a sibling site).
    bob = sign_session("bob", "bob-token-0123456789abcdef", settings.session_key)
    bob_again = sign_session("bob", "bob-token-0123456789abcdef", settings.session_key)
    signed_in = _request(host, cookies=f"{jar}; aicd_session={bob}")
    victim = _request({"Origin": "https://dash.example", **host}, cookies=f"{jar}; aicd_session={bob_again}")
    session_token, _, _ = csrf_token(signed_in, settings)
    assert csrf_problem(_request(host, cookies=f"{jar}; aicd_session={bob}"), session_token, settings) is None
    assert "CSRF token" in (csrf_problem(victim, session_token, settings) or "")
    assert "CSRF token" in (csrf_problem(victim, token, settings) or "")  # the signed-out token neither
    # A proxy's identity binds the token the same way.
    proxied = {"AICD_DASHBOARD_TRUSTED_PROXIES": "10.0.0.0/8"}
    proxy = _settings(tmp_path, **proxied)
    alice = _request({**host, "X-Forwarded-User": "alice"}, client="10.0.0.2", cookies=jar)
    mallory = _request({**host, "X-Forwarded-User": "mallory"}, client="10.0.0.2", cookies=jar)
    alice_token, _, _ = csrf_token(alice, proxy)
    assert csrf_problem(alice, alice_token, proxy) is None
    assert "CSRF token" in (csrf_problem(mallory, alice_token, proxy) or "")

    evil = _request({"Origin": "https://evil.example", **host}, cookies=jar)
    assert "another origin" in (csrf_problem(evil, token, settings) or "")
    cross = _request({"Sec-Fetch-Site": "cross-site", **host}, cookies=jar)
    assert csrf_problem(cross, token, settings) == "cross-site request"


@pytest.mark.parametrize(
    ("scheme", "headers", "client", "origin", "same"),
    [
        ("https", {"Host": "dash.example"}, "192.0.2.1", "https://dash.example", True),
        ("https", {"Host": "dash.example"}, "192.0.2.1", "https://dash.example:443", True),
        ("https", {"Host": "dash.example"}, "192.0.2.1", "http://dash.example", False),  # scheme
        ("https", {"Host": "dash.example"}, "192.0.2.1", "https://dash.example:8443", False),  # port
        ("https", {"Host": "dash.example:8443"}, "192.0.2.1", "https://dash.example:8443", True),
        ("https", {"Host": "dash.example"}, "192.0.2.1", "https://dash.example.evil.example", False),
        ("http", {"Host": "127.0.0.1:8090"}, "127.0.0.1", "http://127.0.0.1:8090", True),
        ("http", {"Host": "127.0.0.1:8090"}, "127.0.0.1", "http://127.0.0.1:8091", False),
        ("http", {"Host": "127.0.0.1:8090"}, "127.0.0.1", "https://127.0.0.1:8090", False),
        # A trusted proxy that terminates TLS says so; what it says is the browser's scheme.
        (
            "http",
            {"Host": "dash.example", "X-Forwarded-Proto": "https"},
            "10.0.0.2",
            "https://dash.example",
            True,
        ),
        (
            "http",
            {"Host": "dash.example", "X-Forwarded-Proto": "https"},
            "10.0.0.2",
            "http://dash.example",
            False,
        ),
        ("http", {"Host": "dash.example"}, "10.0.0.2", "https://dash.example", False),
        # An untrusted peer's X-Forwarded-Proto is not believed ...
        (
            "http",
            {"Host": "dash.example", "X-Forwarded-Proto": "https"},
            "192.0.2.1",
            "http://dash.example",
            True,
        ),
        # ... but a TLS-terminating proxy aicd was not told about hands on the browser's Host: its https origin
        # on the default port is the page's own, another port is not.
        ("http", {"Host": "dash.example"}, "192.0.2.1", "https://dash.example", True),
        ("http", {"Host": "dash.example"}, "192.0.2.1", "https://dash.example:8443", False),
        ("http", {"Host": "dash.example:8080"}, "192.0.2.1", "https://dash.example", False),
    ],
)
def test_the_origin_must_be_the_dashboards_own_scheme_host_and_port(
    tmp_path: Path, scheme: str, headers: dict[str, str], client: str, origin: str, same: bool
) -> None:
    settings = _settings(tmp_path, AICD_DASHBOARD_TRUSTED_PROXIES="10.0.0.0/8")
    request = _request({**headers, "Origin": origin}, client=client, scheme=scheme)
    problem = origin_problem(request, settings)
    assert (problem is None) == same, problem


def test_pause_resume_abort_need_an_approver_or_an_operator(tmp_path: Path) -> None:
    settings = _settings(tmp_path, AICD_DASHBOARD_OPERATORS="oncall")
    approvers = Roster.of((), ["alice"])
    assert steering_refusal(Identity("alice", "session"), "pause", approvers, settings) is None
    assert steering_refusal(Identity("oncall", "proxy"), "abort", approvers, settings) is None
    refused = steering_refusal(Identity("mallory", "session"), "resume", approvers, settings)
    assert refused is not None and "mallory may not resume" in refused and "alice" in refused
    assert steering_refusal(None, "pause", approvers, settings) == "sign in to act on a delivery"
    # Approvals are the workflow's to decide (its validator knows the stage's approvers).
    assert steering_refusal(Identity("mallory", "session"), "approve", approvers, settings) is None
    everyone = _settings(tmp_path, AICD_DASHBOARD_OPERATORS="*")
    assert steering_refusal(Identity("mallory", "session"), "pause", approvers, everyone) is None


def test_a_dashboard_sign_in_that_reads_a_slack_user_id_is_not_that_slack_approver(tmp_path: Path) -> None:
    """The README says to list approvers by Slack user ID, and a spec without `people` lists them bare. A
    trusted proxy's X-Forwarded-User is the identity provider's user name, which its owner may choose (a GitHub
    login through oauth2-proxy): whoever may read the dashboard renames themselves `U024BE7LH` (Slack IDs are
    in the spec and visible to the workspace) and approves production, or resumes a `pause: {}`, as that
    approver. Slack signs its user IDs; the dashboard's are not Slack's."""
    settings = _settings(tmp_path)
    chosen = request_identity(_request({"X-Forwarded-User": "U024BE7LH"}, client="10.0.0.7"), settings)
    assert chosen == Identity("U024BE7LH", "proxy")
    approvers = Roster.of((), ["U024BE7LH"])
    assert approvers.admits("U024BE7LH", "slack")
    assert steering_refusal(chosen, "resume", approvers, settings) is not None  # the dashboard's own check
    assert not approvers.admits(chosen.name, "dashboard")  # the approve validator's check


# --- settings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AICD_DASHBOARD_TRUSTED_PROXIES", "10.0.0.0/24, proxy.local", "'proxy.local' is not an IP address"),
        ("AICD_DASHBOARD_PROXY_HEADER", "X-User", "must be one of X-Forwarded-User, X-Forwarded-Email"),
        ("AICD_DASHBOARD_COMMIT_URL", "https://git.example/commit", "must contain {sha}"),
        ("AICD_DASHBOARD_SESSION_KEY", "short", "at least 32 characters"),
        ("AICD_DASHBOARD_READ", "everyone", "must be anyone or signed-in"),
        ("AICD_DASHBOARD_POLL_S", "0", "between 0.1 and 60"),
        ("AICD_DASHBOARD_TOKENS_FILE", "/nonexistent/tokens.yaml", "cannot read /nonexistent/tokens.yaml"),
    ],
)
def test_bad_settings_say_which_and_why(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        DashboardSettings.from_env({variable: value})
    assert variable in str(error.value) and message in str(error.value)


def test_a_tokens_file_is_checked_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("alice: alice-token-0123456789abcdef\nbob: short\n")
    with pytest.raises(SettingsError, match=rf"{path}:2:6: bob: a token needs at least 16 characters"):
        load_tokens(path)
    path.write_text("alice: alice-token-0123456789abcdef\nbob: alice-token-0123456789abcdef\n")
    with pytest.raises(SettingsError, match="the same token as alice"):
        load_tokens(path)
    path.write_text("alice: [1, 2]\n")
    with pytest.raises(SettingsError, match="alice: the token must be a string"):
        load_tokens(path)
    assert not DashboardSettings.from_env({}).read_signed_in  # nobody can sign in: reading stays open


def test_sign_in_tokens_read_from_the_tokens_file_are_masked_in_log_lines(tmp_path: Path) -> None:
    token = f"carol-{secrets.token_hex(16)}"
    path = tmp_path / "tokens.yaml"
    path.write_text(f"carol: {token}\n")
    formatter = RedactingFormatter("%(message)s")  # set up before the file is read, as at a start
    load_tokens(path)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "bearer %s failed", (token,), None)
    assert formatter.format(record) == "bearer *** failed"


# --- the app without Temporal --------------------------------------------------------------------------------


async def _unreachable() -> Client:
    raise RuntimeError("Temporal is not reachable in this test")


def _form_csrf(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def _app(tmp_path: Path) -> httpx.AsyncClient:
    app = standalone_app(_settings(tmp_path, AICD_DASHBOARD_READ="anyone"), _unreachable)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_login_sets_a_strict_session_cookie_and_slows_down_guessing(tmp_path: Path) -> None:
    async with _app(tmp_path) as http:
        page = await http.get("/login?next=/deliveries/x")
        assert page.status_code == 200 and "Your dashboard token" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        csrf = _form_csrf(page.text)
        headers = {"origin": "http://testserver"}
        no_csrf = await http.post("/login", data={"token": "alice-token-0123456789abcdef"}, headers=headers)
        assert no_csrf.status_code == 403 and "aicd_session" not in http.cookies
        signed = await http.post(
            "/login",
            data={"token": "alice-token-0123456789abcdef", "csrf_token": csrf, "next": "/deliveries/x"},
            headers=headers,
            follow_redirects=False,
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/deliveries/x"
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        # The signed-out page's token does not act for the session: pages signed in carry their own.
        stale = await http.post("/logout", data={"csrf_token": csrf}, headers=headers, follow_redirects=False)
        assert stale.status_code == 403 and "aicd_session" in http.cookies
        csrf = _form_csrf((await http.get("/login")).text)
        offsite = await http.post(
            "/login",
            data={"token": "alice-token-0123456789abcdef", "csrf_token": csrf, "next": "//evil.example/"},
            headers=headers,
            follow_redirects=False,
        )
        assert offsite.headers["location"] == "/"  # never off this site
        csrf = _form_csrf((await http.get("/login")).text)  # that sign-in began a new session
        for _ in range(10):
            wrong = await http.post("/login", data={"token": "x" * 20, "csrf_token": csrf}, headers=headers)
            assert wrong.status_code == 401 and "Unknown token" in wrong.text
        blocked = await http.post("/login", data={"token": "x" * 20, "csrf_token": csrf}, headers=headers)
        assert blocked.status_code == 429


async def test_guessing_tokens_as_bearer_is_as_slow_as_through_the_form(tmp_path: Path) -> None:
    """`Authorization: Bearer` is the form's token by another way in: its failures count with the form's, so
    a blocked address guesses on neither."""
    async with _app(tmp_path) as http:
        for _ in range(10):
            wrong = await http.get("/", headers={"Authorization": f"Bearer {'x' * 20}"})
            assert wrong.status_code == 401 and "unknown token" in wrong.text
        right = {"Authorization": "Bearer alice-token-0123456789abcdef"}
        blocked = await http.get("/", headers=right)
        assert blocked.status_code == 429 and "too many failed sign-ins" in blocked.text
        action = await http.post(
            "/deliveries/delivery-demo-app-" + "a" * 40 + "/actions/pause",
            headers={**right, "accept": "application/json"},
        )
        assert action.status_code == 429
        page = await http.get("/login")
        form = {"token": "alice-token-0123456789abcdef", "csrf_token": _form_csrf(page.text)}
        login = await http.post("/login", data=form, headers={"origin": "http://testserver"})
        assert login.status_code == 429


async def test_a_removed_or_replaced_token_ends_its_sessions(tmp_path: Path) -> None:
    """The operator removes a token from the tokens file (its owner left, or it leaked) or replaces it, and
    restarts the dashboard with the same session key: the sessions signed in with the old token end, so they
    can neither approve nor steer as that person any more."""
    key = {"AICD_DASHBOARD_SESSION_KEY": "k" * 40, "AICD_DASHBOARD_READ": "anyone"}
    settings = _settings(tmp_path, **key)
    app = standalone_app(settings, _unreachable)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        page = await http.get("/login")
        form = {"token": "alice-token-0123456789abcdef", "csrf_token": _form_csrf(page.text)}
        signed = await http.post("/login", data=form, headers={"origin": "http://testserver"})
        assert signed.status_code == 303, signed.text
        session = f"aicd_session={http.cookies['aicd_session']}"
    assert request_identity(_request(cookies=session), settings) == Identity("alice", "session")

    tokens = tmp_path / "tokens-now.yaml"
    for now in ("bob: bob-token-0123456789abcdef\n", "alice: alice-new-token-0123456789ab\n"):
        tokens.write_text(now)
        tokens.chmod(0o600)
        restarted = DashboardSettings.from_env({**key, "AICD_DASHBOARD_TOKENS_FILE": str(tokens)})
        assert request_identity(_request(cookies=session), restarted) is None, now


async def test_pages_say_when_temporal_cannot_be_reached_and_actions_need_identity(tmp_path: Path) -> None:
    async with _app(tmp_path) as http:
        listing = await http.get("/")
        assert listing.status_code == 200 and "Temporal cannot be reached" in listing.text
        page = await http.get("/deliveries/delivery-demo-app-" + "a" * 40)
        assert page.status_code == 503
        assert (await http.get("/deliveries/not-a-delivery")).status_code == 404
        refused = await http.post(
            "/deliveries/delivery-demo-app-" + "a" * 40 + "/actions/pause",
            headers={"accept": "application/json"},
        )
        assert refused.status_code == 401 and "no action without an identity" in refused.json()["message"]
        assert (await http.get("/static/dashboard.js")).status_code == 200


# --- Git ------------------------------------------------------------------------------------------------------


def test_commit_links_and_repository_paths() -> None:
    assert repo_path("https://github.com/acme/gitops.git") == "acme/gitops"
    assert repo_path("git@gitlab.example.com:platform/deploy/gitops.git") == "platform/deploy/gitops"
    assert repo_path("ssh://git@host:2222/acme/gitops") == "acme/gitops"
    assert repo_path("https://user:secret@host/acme/gitops.git") == "acme/gitops"
    sha = "a" * 40
    assert commit_url(
        "https://github.com/{repo_path}/commit/{sha}", "git@github.com:acme/gitops.git", sha
    ) == (f"https://github.com/acme/gitops/commit/{sha}")
    assert commit_url(
        "https://gitlab.example.com/{repo_path}/-/commit/{short}", "https://gitlab.example.com/a/b.git", sha
    ) == ("https://gitlab.example.com/a/b/-/commit/aaaaaaaa")


def test_parse_diff_numbers_lines() -> None:
    text = (
        "diff --git a/apps/web.yaml b/apps/web.yaml\nindex 1..2 100644\n--- a/apps/web.yaml\n+++ b/apps/web.yaml\n"
        "@@ -1,3 +1,3 @@\n image:\n-  tag: v1\n+  tag: v2\n canary:\n"
    )
    (diff,) = parse_diff(text)
    assert (diff.path, diff.added, diff.removed) == ("apps/web.yaml", 1, 1)
    assert [(line.kind, line.old, line.new) for line in diff.lines] == [
        ("hunk", None, None),
        ("ctx", 1, 1),
        ("del", 2, None),
        ("add", None, 2),
        ("ctx", 3, 3),
    ]


async def test_commits_and_diffs_come_from_the_gitops_repository(tmp_path: Path) -> None:
    bare, base = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v1\n"})
    work = tmp_path / "work"
    git("clone", "-q", bare, str(work))
    (work / "web.yaml").write_text("image:\n  tag: v2\n")
    message = (
        "aicd: web v2\n\nAicd-Delivery: web@"
        + "b" * 40
        + "\nAicd-Step: prod/web/0-setWeight\nAicd-Actor: alice\n"
    )
    git("-c", "user.name=aicd", "-c", "user.email=aicd@localhost", "commit", "-qam", message, cwd=work)
    reader = GitOpsReader(cache=tmp_path / "cache")
    sha = git("rev-parse", "HEAD", cwd=work)
    assert await reader.infos(bare, [sha]) == {}  # not pushed yet: unknown, no error
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    await asyncio.sleep(1.0)  # the fetch cooldown
    infos = await reader.infos(bare, [sha, base])
    assert (
        infos[sha].step == "prod/web/0-setWeight"
        and infos[sha].actor == "alice"
        and infos[sha].author == "aicd"
    )
    assert infos[base].step == ""  # a commit that is not aicd's
    diff = await reader.diff(bare, sha)
    (changed,) = diff.files
    assert changed.path == "web.yaml" and [
        (line.kind, line.text) for line in changed.lines if line.kind != "ctx"
    ][-2:] == [
        ("del", "  tag: v1"),
        ("add", "  tag: v2"),
    ]


async def test_commits_the_branch_no_longer_holds_are_found_off_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_gitops, "BRANCH_RECHECK_S", 0.0)  # every call reads the branch afresh
    bare, base = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v1\n"})
    work = tmp_path / "work"
    git("clone", "-q", bare, str(work))
    shas = []
    for tag in ("v2", "v3"):
        (work / "web.yaml").write_text(f"image:\n  tag: {tag}\n")
        git("-c", "user.name=aicd", "-c", "user.email=aicd@localhost", "commit", "-qam", tag, cwd=work)
        shas.append(git("rev-parse", "HEAD", cwd=work))
    first, second = shas
    reader = GitOpsReader(cache=tmp_path / "cache")
    assert await reader.off_branch(bare, "main", shas) == set(
        shas
    )  # never pushed: on no branch of the remote
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    assert await reader.off_branch(bare, "main", [*shas, base]) == set()
    git("push", "-q", "--force", "origin", f"{first}:main", cwd=work)  # on-call undoes the last commit
    assert await reader.off_branch(bare, "main", [*shas, base]) == {second}
    later = human_commit(bare, tmp_path, {"other.yaml": "x: 1\n"}, "a commit on the rewritten branch")
    assert await reader.off_branch(bare, "main", [*shas, base, later]) == {second}
    git("--git-dir", bare, "update-ref", "-d", "refs/heads/main")  # the branch deleted
    assert await reader.off_branch(bare, "main", [first, base]) == {first, base}
    assert await reader.off_branch(str(tmp_path / "gone.git"), "main", shas) == set()  # unreadable: no claim


async def test_later_commits_that_changed_a_targets_files_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_gitops, "BRANCH_RECHECK_S", 0.0)  # every call reads the branch afresh
    bare, _ = make_repo(tmp_path, "gitops", {"a.yaml": "tag: v0\n", "b.yaml": "tag: v0\n"})
    work = tmp_path / "work"
    git("clone", "-q", bare, str(work))

    def commit(files: dict[str, str], message: str, delivery: str = "", who: str = "aicd") -> str:
        for name, content in files.items():
            (work / name).write_text(content)
        trailer = f"\n\nAicd-Delivery-Id: {delivery}\n" if delivery else ""
        git(
            "-c",
            f"user.name={who}",
            "-c",
            "user.email=x@localhost",
            "commit",
            "-qam",
            message + trailer,
            cwd=work,
        )
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    canary = commit({"a.yaml": "tag: v1\ncanary: 10\n"}, "a canary", "delivery-one")
    promote = commit({"a.yaml": "tag: v1\n"}, "a promote", "delivery-one")
    other = commit({"b.yaml": "tag: v1\n"}, "b promote", "delivery-one")
    reader = GitOpsReader(cache=tmp_path / "cache")
    written = {"a": [canary, promote], "b": [other]}
    assert await reader.changed_since(bare, "main", "delivery-one", written) == {}
    note = commit({"b.yaml": "tag: v1\n# note\n"}, "a note in b", who="Bob")  # not a's file
    newer = commit({"a.yaml": "tag: v2\n"}, "a v2", "delivery-two")
    later = await reader.changed_since(bare, "main", "delivery-one", written)
    assert [(c.sha, c.author, c.subject, c.delivery_id) for c in later["a"]] == [
        (newer, "aicd", "a v2", "delivery-two")
    ]
    assert [(c.sha, c.author) for c in later["b"]] == [(note, "Bob")]
    pin = commit({"a.yaml": "tag: v1\nreplicas: 2\n"}, "pin a back to v1", who="Alice")
    later = await reader.changed_since(bare, "main", "delivery-one", written)
    assert [(c.sha, c.author, c.subject) for c in later["a"]] == [(pin, "Alice", "pin a back to v1")]
    assert await reader.changed_since(bare, "main", "delivery-two", {"a": [newer]}) == {"a": later["a"]}
    commit(
        {"a.yaml": "tag: v1\n"}, "as the delivery left it", who="Alice"
    )  # changed back: what it wrote runs
    assert "a" not in await reader.changed_since(bare, "main", "delivery-one", written)
    # A delivery's earlier commit dropped by a force-push, read by a mirror that never saw it.
    dropped = commit({"b.yaml": "tag: v3\ncanary: 10\n"}, "b canary", "delivery-three")
    git("reset", "-q", "--hard", f"{dropped}^", cwd=work)
    git("push", "-q", "--force", "origin", "HEAD:main", cwd=work)
    kept = commit({"b.yaml": "tag: v3\n"}, "b promote", "delivery-three")
    edit = commit({"b.yaml": "tag: v2\n"}, "b by hand", who="Carol")
    fresh = GitOpsReader(cache=tmp_path / "fresh")
    later = await fresh.changed_since(bare, "main", "delivery-three", {"b": [dropped, kept]})
    assert [(c.sha, c.author) for c in later["b"]] == [(edit, "Carol")]
    # An edge fleet writes each site's file in one batch: a person's pin between two batches is already in
    # the last batch's tree, and the branch's head is that batch. Each file is read against its own last write.
    batch_1 = commit({"a.yaml": "tag: v4\n"}, "pops batch 1/2", "delivery-four")
    pinned = commit({"a.yaml": "tag: v1\n"}, "pin pop a back", who="Dave")
    batch_2 = commit({"b.yaml": "tag: v4\n"}, "pops batch 2/2", "delivery-four")
    later = await fresh.changed_since(bare, "main", "delivery-four", {"pops": [batch_1, batch_2]})
    assert [(c.sha, c.author) for c in later["pops"]] == [(pinned, "Dave")]


def cli_and_board_access(
    client: Client, delivery_id: str, tmp_path: Path, run_aicd: RunAicd
) -> tuple[Callable[[], Awaitable[Client]], Callable[..., Awaitable[str]]]:
    """The dashboard's way to the test's Temporal, and `aicd status ID [flags]` run as a user would (its
    output; without flags, on one line)."""
    env = aicd_env(
        TEMPORAL_ADDRESS=client.service_client.config.target_host, AICD_CACHE_DIR=str(tmp_path / "cli-cache")
    )

    async def connect() -> Client:
        return client

    async def status(*flags: str) -> str:
        # In a thread: the worker that answers the status query runs on this event loop.
        shown = await asyncio.to_thread(run_aicd, "status", delivery_id, *flags, env=env)
        assert shown.returncode == 0, shown.stderr
        return shown.stdout if flags else " ".join(shown.stdout.split())

    return connect, status


async def test_a_delivery_page_and_status_say_when_what_runs_is_no_longer_the_deliverys(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_aicd: RunAicd
) -> None:
    """A delivery that succeeded; then on-call pins the target back in a commit of their own, and later forces
    the branch back over the delivery's promote commit. The page and `aicd status` name the person's commit as
    what runs, then mark the promote commit the branch no longer holds."""
    monkeypatch.setattr(dashboard_gitops, "BRANCH_RECHECK_S", 0.0)
    monkeypatch.setattr(dashboard_service, "GIT_WAIT_S", 30.0)
    client = temporal_env.client
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"a.yaml": "image: {tag: v0}\n"})
    document = spec_document(
        "rewritten",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}},
        [{"name": "one", "targets": ["a"], "strategy": {"canary": {"steps": [{"setWeight": 10}]}}}],
    )
    plan = plan_from(document, revision)
    viewer = Viewer(Identity("alice", "session"), "t" * 43, "c" * 43, False, Urls(""), "/")
    connect, status = cli_and_board_access(client, plan.delivery_id, tmp_path, run_aicd)

    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue, index_search_attributes=False)
        assert (await handle_for(client, plan.delivery_id).result()).phase == "succeeded"
        board = Dashboard(_settings(tmp_path), connect)
        board.service.gitops = GitOpsReader(cache=tmp_path / "cache")
        before = await board.service.view(plan.delivery_id)
        made = [row.sha for row in before.commits]
        assert len(made) >= 2 and not any(row.dropped for row in before.commits) and not before.notes
        assert "changed since" not in await status()

        pin = human_commit(gitops, tmp_path, {"a.yaml": "image: {tag: v0}\n"}, "pin a back to v0")
        pinned = await board.service.view(plan.delivery_id)
        (note,) = pinned.notes
        assert note.startswith(f"a: changed since this delivery by Alice in {pin[:7]} (pin a back to v0)")
        assert "changed since this delivery by Alice" in board.delivery_regions(pinned, viewer)["summary"]
        assert f"a: changed since this delivery by Alice in {pin[:7]}" in await status()
        later = json.loads(await status("--json"))["changed_since"]
        assert [(c["sha"], c["author"]) for c in later["a"]] == [(pin, "Alice")]

        git("--git-dir", gitops, "update-ref", "refs/heads/main", f"{made[-1]}^")  # a force-push back
        after = await board.service.view(plan.delivery_id)
        regions = board.delivery_regions(after, viewer)
        shown = await status()
        as_json = json.loads(await status("--json"))
    assert [row.dropped for row in after.commits] == [False] * (len(made) - 1) + [True]
    (note,) = after.notes  # the promote commit is gone, and with it the pin that followed it
    assert f"1 of this delivery's {len(made)} commits are no longer on the GitOps branch" in note, note
    assert "For a," in note
    assert (
        regions["commits"].count('data-dropped="true"') == 1
        and "no longer on the branch" in regions["commits"]
    )
    assert "no longer on the GitOps branch" in regions["summary"]
    assert f"1 of this delivery's {len(made)} commits are no longer on the GitOps branch" in shown
    assert as_json["off_branch"] == [made[-1]] and as_json["changed_since"] == {}


async def test_a_waiting_delivery_says_a_person_pinned_its_target_before_its_next_write_finds_it(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_aicd: RunAicd
) -> None:
    """A delivery waits at an indefinite pause after its canary commit; on-call pins the target back by hand.
    The delivery learns it only at its next write, which may be hours away: until then its page and `aicd
    status` already say that what runs is the person's commit. The delivery's own later commits are never named."""
    monkeypatch.setattr(dashboard_gitops, "BRANCH_RECHECK_S", 0.0)
    monkeypatch.setattr(dashboard_service, "GIT_WAIT_S", 30.0)
    client = temporal_env.client
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(
        tmp_path, "gitops", {"a.yaml": "image: {tag: v0}\n", "b.yaml": "image: {tag: v0}\n"}
    )
    steps = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]
    document = spec_document(
        "waiting",
        source,
        gitops,
        {"a": {"kind": "git", "path": "a.yaml"}, "b": {"kind": "git", "path": "b.yaml"}},
        [{"name": "one", "targets": ["a", "b"], "strategy": {"canary": {"steps": steps}}}],
    )
    plan = plan_from(document, revision)
    connect, status = cli_and_board_access(client, plan.delivery_id, tmp_path, run_aicd)

    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue, index_search_attributes=False)
        await wait_for(
            client,
            plan.delivery_id,
            lambda s: all(name in s.targets and s.targets[name].step_index == 1 for name in ("a", "b")),
        )
        board = Dashboard(_settings(tmp_path), connect)
        board.service.gitops = GitOpsReader(cache=tmp_path / "cache")
        waiting = await board.service.view(plan.delivery_id)
        assert waiting.commits and not waiting.notes
        assert "changed since" not in await status()

        pin = human_commit(gitops, tmp_path, {"a.yaml": "image: {tag: v0}\n"}, "pin a back to v0")
        pinned = await board.service.view(plan.delivery_id)
        shown = await status()
        as_json = json.loads(await status("--json"))
        assert as_json["phase"] not in ("succeeded", "failed", "aborted")  # still waiting at its pause
        await send_action(client, plan.delivery_id, "abort", HumanAction("oncall", "pinned by hand"))
        await handle_for(client, plan.delivery_id).result()
    (note,) = pinned.notes  # a only: b runs what the delivery wrote
    assert note.startswith(f"a: changed since this delivery by Alice in {pin[:7]} (pin a back to v0)"), note
    assert f"a: changed since this delivery by Alice in {pin[:7]}" in shown and "b: changed" not in shown
    assert [(c["sha"], c["author"]) for c in as_json["changed_since"]["a"]] == [(pin, "Alice")]
    assert set(as_json["changed_since"]) == {"a"} and as_json["off_branch"] == []


def test_aicd_dashboard_refuses_to_show_everything_to_everyone(run_aicd: RunAicd, tmp_path: Path) -> None:
    exposed = run_aicd("dashboard", "--host", "0.0.0.0", "--port", "0")
    assert exposed.returncode == 2
    assert (
        "would show every delivery to anyone" in exposed.stderr
        and "AICD_DASHBOARD_TOKENS_FILE" in exposed.stderr
    )
    bad = run_aicd("dashboard", env=aicd_env(AICD_DASHBOARD_SESSION_KEY="short"))
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "aicd: AICD_DASHBOARD_SESSION_KEY must be at least 32 characters"
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("127.evil.example.com", False),  # a name, not an address: it resolves wherever its owner likes
        ("127.0.0.1.nip.io", False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
    ],
)
def test_only_loopback_addresses_serve_an_open_dashboard(host: str, loopback: bool) -> None:
    problem = exposure_problem(host, DashboardSettings())
    assert (problem is None) == loopback, (host, problem)


async def test_one_poller_serves_every_subscriber_and_stops_at_the_end() -> None:
    hub = Hub(poll_s=0.01)
    calls = 0

    async def produce() -> tuple[int, bool]:
        nonlocal calls
        calls += 1
        return min(calls, 5), calls >= 5  # changes four times, then the delivery ends

    async def watch() -> list[tuple[int | None, bool]]:
        return [update async for update in hub.follow("d", produce, lambda n: n)]

    first, second = await asyncio.gather(watch(), watch())
    assert calls == 5  # one poller for both watchers, not one each
    for seen in (first, second):
        assert seen[-1] == (5, True) and [n for n, _ in seen] == sorted(n for n, _ in seen)
    assert await watch() == [(5, True)]  # a page opened after the end gets the last picture at once
    assert calls == 6
    await hub.close()
