"""The dashboard in a real browser: Debian's chromium driven by Playwright (its own browser download cannot
work here), against the dashboard served by uvicorn over real Temporal, Git and Prometheus.

One healthy delivery (staging with a canary analysis, then production behind an approval, in two waves) and
one broken delivery (its canary's errors fail the analysis; it rolls back) run on the embedded stack. Two
people sign in with their tokens: alice, an approver, and mallory, who is not. The test follows the
deliveries live in the browser, clicks pause, resume and approve as both, and checks that what the pages
draw is the deliveries' real data, read independently from the workflow histories. Screenshots of every
page go to the test's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd.cli.dashboard import server_config
from aicd.client import get_status, handle_for, start_delivery
from aicd.dashboard import DashboardSettings, standalone_app
from aicd.dashboard.settings import load_tokens
from aicd.dev.ports import bind_socket
from aicd.dev.prometheus import find_prometheus
from aicd.messages import Trigger
from aicd.testing.engine import make_repo, plan_from, running_worker, spec_document, temporal_env
from tests.test_analysis_prometheus import analysis_spec, exporters, scraping

__all__ = ["exporters", "temporal_env"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKENS = {"alice": "alice-token-0123456789abcdef", "mallory": "mallory-token-0123456789abc"}
WAIT_MS = 90_000

pytestmark = [
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs Debian's chromium (scripts/setup.sh)"),
    pytest.mark.skipif(find_prometheus() is None, reason="needs Debian's prometheus (scripts/setup.sh)"),
]


def healthy_spec(tmp_path: Path, prometheus_url: str) -> tuple[dict[str, Any], str, str]:
    """Staging (canary analysis on web-a), then production behind alice's approval in two waves."""
    document, _gitops, revision = analysis_spec(tmp_path / "h", "healthy", prometheus_url)
    gitops, _ = make_repo(
        tmp_path / "h",
        "gitops-three",
        {f"{name}.yaml": "image:\n  tag: v0\n" for name in ("web-a", "web-b", "web-c")},
    )
    spec = spec_document(
        "healthy",
        document["spec"]["source"]["repo"],
        gitops,
        {
            name: {"kind": "git", "path": f"{name}.yaml", "region": region}
            for name, region in (("web-a", "eu-1"), ("web-b", "eu-1"), ("web-c", "us-1"))
        },
        [
            {
                "name": "staging",
                "targets": ["web-a"],
                "strategy": {
                    "canary": {
                        "steps": [
                            {"setWeight": 50},
                            {
                                "analysis": {
                                    "duration": "12s",
                                    "onInconclusive": "extend",
                                    "maxDuration": "36s",
                                }
                            },
                            {"setWeight": 100},
                        ]
                    }
                },
            },
            {
                "name": "production",
                "approval": {"approvers": ["alice"], "timeout": "10m"},
                "waves": [["web-b"], ["web-c"]],
                "strategy": {"canary": {"steps": [{"setWeight": 25}, {"setWeight": 100}]}},
            },
        ],
        analysis=document["spec"]["analysis"],
        rollback={"scope": "stage"},
    )
    return spec, gitops, revision


@contextlib.asynccontextmanager
async def dashboard_server(client: Client, tokens_file: Path) -> AsyncIterator[str]:
    settings = DashboardSettings(tokens=load_tokens(tokens_file), read_signed_in=True, poll_s=0.5)

    async def connect() -> Client:
        return client

    sock = bind_socket()
    server = uvicorn.Server(server_config(standalone_app(settings, connect), "127.0.0.1", 0, "warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def history_json(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    """The workflow's history as Temporal's JSON (read here independently of the dashboard's reader)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return json.loads(history.to_json())["events"]


def payload(attributes: dict[str, Any], key: str) -> Any:
    import base64

    return json.loads(base64.b64decode(attributes[key]["payloads"][0]["data"]))


async def committed_weights(client: Client, events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per target: 0 at its start, then the weight each of its rollout's step commits set, read from the
    rollout's own history (independently of the dashboard's reader; a rollout reports to the delivery only the
    steps it waits on): the chart must step through exactly these."""
    weights: dict[str, list[int]] = {}
    for event in events:
        child = event.get("startChildWorkflowExecutionInitiatedEventAttributes")
        if not child:
            continue
        target = child["workflowId"].rsplit("--", 1)[1]
        weights[target] = [0]
        for step in await history_json(client, child["workflowId"]):
            scheduled = step.get("activityTaskScheduledEventAttributes")
            if scheduled and scheduled["activityType"]["name"] == "apply_step":
                subject = payload(scheduled, "input")["commit"]["subject"]  # "... <target> setWeight 50"
                words = subject.split()
                weights[target].append(100 if words[-2] == "promote" else int(words[-1]))
    return weights


def changes(values: list[int]) -> list[int]:
    return [value for index, value in enumerate(values) if index == 0 or value != values[index - 1]]


def analysis_looks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verdicts of every analysis_look activity, in order."""
    scheduled = {
        event["eventId"]
        for event in events
        if event.get("activityTaskScheduledEventAttributes", {}).get("activityType", {}).get("name")
        == "analysis_look"
    }
    return [
        payload(event["activityTaskCompletedEventAttributes"], "result")
        for event in events
        if event.get("activityTaskCompletedEventAttributes", {}).get("scheduledEventId") in scheduled
    ]


async def sign_in(context: Any, base: str, who: str, shots: Path) -> Any:
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(f"{base}/")  # reading needs sign-in here: the list sends us to the login form
    assert "/login" in page.url
    await page.get_by_label("Your dashboard token").fill(TOKENS[who])
    if who == "alice":
        await page.screenshot(path=shots / "login.png")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_selector(f'[data-identity="{who}"]')
    return page


async def numbers(page: Any, selector: str, attribute: str) -> list[str]:
    return await page.eval_on_selector_all(
        selector, f"nodes => nodes.map(n => n.getAttribute('{attribute}'))"
    )


async def test_dashboard_in_a_browser(
    temporal_env: WorkflowEnvironment, exporters: list[str], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    shots = tmp_path / "screenshots"
    shots.mkdir()
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text(yaml.safe_dump(TOKENS))
    tokens_file.chmod(0o600)
    client = temporal_env.client
    prometheus = scraping(tmp_path, exporters)
    try:
        good_spec, _good_gitops, revision = healthy_spec(tmp_path, prometheus.url)
        bad_spec, _bad_gitops, bad_revision = analysis_spec(tmp_path / "b", "broken", prometheus.url)
        good, bad = plan_from(good_spec, revision), plan_from(bad_spec, bad_revision)
        async with (
            running_worker(client, tmp_path / "state") as queue,
            dashboard_server(client, tokens_file) as base,
            async_playwright() as playwright,
        ):
            launch = {"executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}
            viewport = {"width": 1400, "height": 1000}
            alice_context = await playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile-alice"), viewport=viewport, **launch
            )
            mallory_context = await playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile-mallory"), viewport=viewport, **launch
            )
            alice = await sign_in(alice_context, base, "alice", shots)
            mallory = await sign_in(mallory_context, base, "mallory", shots)

            await start_delivery(client, good, Trigger("cli", "tester"), queue=queue)
            await start_delivery(client, bad, Trigger("cli", "tester"), queue=queue)

            # The list, open before the deliveries end, shows both and follows them without a reload.
            await alice.goto(f"{base}/")
            for delivery in (good, bad):
                await alice.wait_for_selector(f'tr[data-delivery="{delivery.delivery_id}"]', timeout=WAIT_MS)
            await alice.wait_for_selector(
                f'tr[data-delivery="{bad.delivery_id}"][data-phase="failed"]', timeout=WAIT_MS
            )

            # The healthy delivery's page, followed live while its canary analysis runs.
            page_url = f"{base}/deliveries/{good.delivery_id}"
            await alice.goto(page_url)
            await mallory.goto(page_url)
            analysing = 'li.node[data-target="web-a"][data-step^="1:"]'
            await alice.wait_for_selector(analysing, timeout=WAIT_MS)
            await mallory.wait_for_selector(analysing, timeout=WAIT_MS)

            # mallory is not an approver: pause is refused and nothing changes.
            assert await mallory.locator("[data-not-permitted]").count() == 1
            await mallory.click("#act-pause")
            await expect(mallory.locator("#notice.notice-refused")).to_contain_text("mallory may not pause")
            status = await get_status(client, good.delivery_id)
            assert not status.paused and status.actions == []

            # alice pauses and resumes; the page follows (server-sent events, no reload).
            await alice.fill("#reason-pause", "looking at the canary")
            await alice.click("#act-pause")
            await expect(alice.locator("#notice.notice-ok")).to_contain_text(
                f"paused {good.delivery_id} (as alice)"
            )
            await alice.wait_for_selector('#r-phase [data-phase="paused"]', timeout=WAIT_MS)
            status = await get_status(client, good.delivery_id)
            assert status.paused and [(a.kind, a.actor, a.reason) for a in status.actions] == [
                ("pause", "alice", "looking at the canary")
            ]
            await mallory.wait_for_selector('#r-phase [data-phase="paused"]', timeout=WAIT_MS)
            await mallory.click("#act-resume")  # refused for mallory too
            await expect(mallory.locator("#notice.notice-refused")).to_contain_text("mallory may not resume")
            assert (await get_status(client, good.delivery_id)).paused
            await alice.click("#act-resume")
            await alice.wait_for_selector(
                '#r-phase [data-paused="false"]:not([data-phase="paused"])', timeout=WAIT_MS
            )
            await alice.screenshot(path=shots / "delivery-running.png", full_page=True)

            # A machine too busy for the judge to settle in time leaves the analysis inconclusive: it then
            # waits for a human, and alice's resume counts as a pass (the demo does the same).
            gate_or_human = '#act-approve, li.node[data-target="web-a"][data-state="awaiting-resume"]'
            await alice.wait_for_selector(gate_or_human, timeout=WAIT_MS)
            if await alice.locator("#act-approve").count() == 0:
                await alice.click("#act-resume")
            # The approval gate: the workflow refuses mallory, accepts alice.
            await mallory.wait_for_selector("#act-approve", timeout=WAIT_MS)
            await mallory.click("#act-approve")
            await expect(mallory.locator("#notice.notice-refused")).to_contain_text(
                "mallory is not an approver of stage production"
            )
            await alice.wait_for_selector("#act-approve", timeout=WAIT_MS)
            await alice.click("#act-approve")
            await alice.wait_for_selector('#r-phase [data-phase="succeeded"]', timeout=WAIT_MS)
            await handle_for(client, bad.delivery_id).result()

            # --- the finished healthy delivery, as drawn, against its real data ---
            status = await get_status(client, good.delivery_id)
            await alice.goto(page_url)
            nodes = alice.locator("li.node")
            assert await nodes.count() == 3
            for name, target in status.targets.items():
                node = alice.locator(f'li.node[data-target="{name}"]')
                assert await node.get_attribute("data-state") == target.state == "promoted"
                assert await node.get_attribute("data-weight") == str(target.weight) == "100"
            assert await numbers(alice, "ol.graph > li.stage", "data-stage") == ["staging", "production"]
            assert await numbers(alice, 'li.stage[data-stage="production"] li.wave', "data-wave") == [
                "1",
                "2",
            ]

            expected = await committed_weights(client, await history_json(client, good.delivery_id))
            assert await alice.locator("g.lane").count() == 3
            for name, weights in expected.items():
                drawn = await numbers(alice, f'g.lane[data-target="{name}"] circle.point', "data-weight")
                assert changes([int(w) for w in drawn]) == changes(weights), name
            assert changes(expected["web-a"]) == [0, 50, 100]
            assert changes(expected["web-b"]) == [0, 25, 100]
            assert "paused" in await numbers(alice, 'g.lane[data-target="web-a"] circle.point', "data-state")
            pauses = await numbers(alice, 'g.lane[data-target="web-a"] rect.pause', "data-state")
            assert pauses[0] == "paused" and set(pauses) <= {"paused", "awaiting-resume"}
            actions = await alice.eval_on_selector_all(
                "g.action-marker", "nodes => nodes.map(n => [n.dataset.kind, n.dataset.actor])"
            )
            assert actions[:2] == [["pause", "alice"], ["resume", "alice"]] and actions[-1] == [
                "approve",
                "alice",
            ]
            assert [
                [a.kind, a.actor] for a in status.actions
            ] == actions  # mallory's attempts changed nothing
            log_rows = await alice.eval_on_selector_all(
                "table.action-log tr[data-kind]", "rows => rows.map(r => [r.dataset.kind, r.dataset.actor])"
            )
            assert log_rows == actions

            child = f"{good.delivery_id}--staging--web-a"
            looks = analysis_looks(await history_json(client, child))
            assert looks
            # Tolerances as the spec says: +5% (or 5 points of error ratio), +50%.
            for metric, tolerances in (("error-rate", ["1.05", "0.05"]), ("latency-p90", ["1.5"])):
                chart = f'figure.metric-chart[data-target="web-a"][data-metric="{metric}"]'
                last = next(m for m in looks[-1]["metrics"] if m["name"] == metric)
                assert await alice.get_attribute(chart, "data-verdict") == last["verdict"]
                drawn = await numbers(alice, f"{chart} g.look", "data-canary")
                recorded = [
                    next(m for m in look["metrics"] if m["name"] == metric)["canary_value"] for look in looks
                ]
                assert [float(v) if v else None for v in drawn] == recorded
                baselines = await numbers(alice, f"{chart} g.look", "data-baseline")
                assert [float(v) if v else None for v in baselines] == [
                    next(m for m in look["metrics"] if m["name"] == metric)["baseline_value"]
                    for look in looks
                ]
                assert await numbers(alice, f"{chart} line.tolerance", "data-tolerance") == tolerances
            assert (
                await alice.locator('figure.metric-chart[data-metric="latency-p90"] path.band').count() >= 1
            )
            await alice.screenshot(path=shots / "delivery.png", full_page=True)
            # The top of the page (graph, timeline, charts): what docs/dashboard.png shows.
            overview = {"x": 0, "y": 0, "width": 1400, "height": 1850}
            await alice.screenshot(path=shots / "delivery-overview.png", clip=overview, full_page=True)

            # The commits, each linking to the built-in diff view read from the GitOps repository.
            commits = [sha for target in status.targets.values() for sha in target.commits]
            assert sorted(await numbers(alice, "table.commits tr[data-sha]", "data-sha")) == sorted(commits)
            first = alice.locator('table.commits tr[data-target="web-a"] a').first
            await first.click()
            await alice.wait_for_selector('section.diff[data-path="web-a.yaml"]')
            assert "canary" in await alice.inner_text('section.diff[data-path="web-a.yaml"]')
            assert await alice.locator("tr.line-add").count() >= 1
            await alice.screenshot(path=shots / "commit.png", full_page=True)

            # The broken delivery: the chart shows why it was rolled back.
            await alice.goto(f"{base}/deliveries/{bad.delivery_id}")
            chart = 'figure.metric-chart[data-metric="error-rate"]'
            assert await alice.get_attribute(chart, "data-verdict") == "fail"
            assert "analysis failed" in await alice.inner_text(".reason")
            assert await alice.locator('g.rollback[data-target="web"]').count() == 1
            assert (
                await alice.locator('li.node[data-target="web"]').get_attribute("data-state") == "rolled-back"
            )
            await alice.screenshot(path=shots / "delivery-failed.png", full_page=True)

            await alice.goto(f"{base}/")
            assert (
                await alice.get_attribute(f'tr[data-delivery="{good.delivery_id}"]', "data-phase")
                == "succeeded"
            )
            await alice.screenshot(path=shots / "list.png", full_page=True)

            # No identity, or no CSRF token: no action, whatever the form says.
            cookies = {c["name"]: c["value"] for c in await alice_context.cookies()}
            await alice_context.close()
            await mallory_context.close()
            async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
                anonymous = await http.get("/", follow_redirects=False)
                assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]
                nobody = await http.post(
                    f"/deliveries/{bad.delivery_id}/actions/pause", headers={"accept": "application/json"}
                )
                assert nobody.status_code == 401
                forged = await http.post(
                    f"/deliveries/{bad.delivery_id}/actions/pause",
                    cookies={"aicd_session": cookies["aicd_session"]},
                    data={"csrf_token": "guessed"},
                    headers={"accept": "application/json", "origin": "https://evil.example"},
                )
                assert forged.status_code == 403 and "another origin" in forged.json()["message"]
                bearer = await http.post(
                    f"/deliveries/{bad.delivery_id}/actions/pause",
                    headers={"authorization": f"Bearer {TOKENS['alice']}", "accept": "application/json"},
                )
                assert bearer.status_code == 403  # alice is no approver of the broken delivery
            assert (await get_status(client, bad.delivery_id)).actions == []
    finally:
        prometheus.stop()
    assert {p.name for p in shots.iterdir()} >= {
        "login.png",
        "list.png",
        "delivery.png",
        "delivery-failed.png",
        "commit.png",
    }
