"""Blue-green end to end on the embedded stack: real Temporal, a bare GitOps repo, the embedded reconciler running
real demo-app processes behind its live proxy and its preview port. Before the switch live traffic gets the old
version while the preview port serves the new one; the switch is one commit after which live traffic gets the
new one, the old process kept warm until it is retired; aborts before and after the switch leave Git as it was
and the reconciler serving the old version (after the switch: the very process kept warm)."""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd.activities import WorkerSettings
from aicd.activities.gitops import _without_canary
from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.dashboard.views import stage_views
from aicd.dev.reconciler import LocalReconciler
from aicd.messages import DeliveryStatus, HumanAction, Trigger
from aicd.plan import WritePlan, render_tree
from aicd.slack_blocks import describe_progress
from aicd.status_view import status_text
from aicd.testing.engine import (
    assert_replays,
    commits,
    git,
    make_repo,
    plan_from,
    show,
    spec_document,
    temporal_env,
    wait_for,
)
from aicd.worker import build_worker
from tests.test_embedded_local import make_artifacts

__all__ = ["temporal_env"]

OLD, NEW = "a1b2c3d", "c0ffee1"
VALUES = "apps/shop/prod/values.yaml"
SEED = f"image:\n  tag: {OLD}\n"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, LocalReconciler]]:
    """A GitOps repo whose target runs OLD, and the reconciler running it."""
    gitops, seed = make_repo(tmp_path, "gitops", {VALUES: SEED})
    artifacts = make_artifacts(tmp_path, {OLD: "{}\n", NEW: "{}\n"})
    reconciler = LocalReconciler(
        gitops,
        "main",
        {"web": {"path": VALUES, "app": "shop"}},
        artifacts,
        tmp_path / "rec",
        poll_interval=0.2,
    )
    reconciler.start()
    try:
        deadline = time.monotonic() + 30
        while not reconciler.sync("web", seed).get("healthy"):
            assert time.monotonic() < deadline, reconciler.status("web")
            time.sleep(0.2)
        yield gitops, reconciler
    finally:
        reconciler.stop()


def blue_green_plan(
    tmp_path: Path, gitops: str, reconciler: LocalReconciler, blue_green: dict[str, Any]
) -> Any:
    source, revision = make_repo(tmp_path, "source", {"README": "shop\n"})
    document = spec_document(
        "shop",
        source,
        gitops,
        {"web": {"kind": "local", "path": VALUES, "reconciler": reconciler.url}},
        [{"name": "prod", "targets": ["web"], "strategy": {"blueGreen": blue_green}}],
        build={"command": ["true"], "artifact": f"registry.example.com/shop:{NEW}"},
    )
    return plan_from(document, revision)


async def served(url: str, n: int = 20) -> collections.Counter[str]:
    """The versions that answer `n` requests to `url`."""
    versions: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        for _ in range(n):
            response = await client.get(f"{url}/")
            assert response.status_code == 200, response.text
            versions[response.headers["x-version"]] += 1
    return versions


def pids(reconciler: LocalReconciler) -> dict[str, int]:
    return {f"{p['role']}:{p['version']}": p["pid"] for p in reconciler.status("web")["processes"]}


def steps_committed(gitops: str) -> list[str]:
    return [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]


async def settle(reconciler: LocalReconciler, wanted: set[str], timeout: float = 20.0) -> dict[str, int]:
    """Wait until exactly the processes `wanted` ("role:version") run."""
    deadline = time.monotonic() + timeout
    while set(current := pids(reconciler)) != wanted:
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.1)
    return current


def state_of(step_kind: str, state: str = "progressing") -> Any:
    def check(status: DeliveryStatus) -> bool:
        web = status.targets.get("web")
        return web is not None and web.step_kind == step_kind and web.state == state

    return check


async def start(client: Client, plan: Any, queue: str) -> None:
    await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)


def queue_name() -> str:
    return f"bg-{os.getpid()}-{time.monotonic_ns()}"


async def test_blue_green_release_previews_switches_keeps_warm_and_retires(
    temporal_env: WorkflowEnvironment, tmp_path: Path, stack: tuple[str, LocalReconciler]
) -> None:
    gitops, reconciler = stack
    live = reconciler.proxy_urls()["web"]
    preview = reconciler.status("web")["urls"]["preview.url"]
    plan = blue_green_plan(
        tmp_path,
        gitops,
        reconciler,
        {
            "autoPromotionEnabled": False,
            "scaleDownDelaySeconds": 4,
            "prePromotionAnalysis": [
                {
                    "verify": {
                        "name": "preview-smoke",
                        "http": {"url": "{{ preview.url }}/", "expectBody": NEW},
                    }
                }
            ],
            "postPromotionAnalysis": [
                {"verify": {"name": "live-smoke", "http": {"url": "{{ url }}/", "expectBody": NEW}}}
            ],
        },
    )
    tree = render_tree(plan)
    assert "strategy blueGreen" in tree and f"preview: preview.tag={NEW} (no live traffic)" in tree
    assert "retire after 4s from the switch: previous.tag=None" in tree
    old_pid = pids(reconciler)[f"stable:{OLD}"]
    client = temporal_env.client
    queue = queue_name()
    async with build_worker(client, WorkerSettings(state_dir=tmp_path / "state"), queue):
        await start(client, plan, queue)
        # The preview runs and passed its check; it waits for a human. Live traffic still gets the old version.
        status = await wait_for(client, plan.delivery_id, state_of("preview", "awaiting-resume"), 60)
        web = status.targets["web"]
        assert web.strategy == "blueGreen" and web.weight == 0
        assert [(run.name, run.state) for run in web.verifications] == [("preview-smoke", "passed")]
        assert await served(live) == {OLD: 20}
        assert await served(preview) == {NEW: 20}
        preview_pid = pids(reconciler)[f"preview:{NEW}"]
        assert pids(reconciler)[f"stable:{OLD}"] == old_pid
        assert "tag: c0ffee1" in show(gitops, "main", VALUES) and f"tag: {OLD}" in show(
            gitops, "main", VALUES
        )
        assert "preview" in status_text(status)

        await send_action(client, plan.delivery_id, "resume", HumanAction("alice"))
        # Switched: live traffic gets the new version from the preview's own process; the old one stays warm.
        status = await wait_for(client, plan.delivery_id, state_of("scale-down-delay"), 30)
        assert await served(live) == {NEW: 20}
        assert pids(reconciler) == {f"stable:{NEW}": preview_pid, f"previous:{OLD}": old_pid}
        # Slack and the dashboard say where the strategy stands.
        assert describe_progress(status.targets["web"]).startswith(
            "`web` blueGreen scale-down-delay: previous"
        )
        (stage,) = stage_views(plan, status)
        assert stage.strategy == "blueGreen" and stage.steps == ["verify preview-smoke", "verify live-smoke"]
        assert stage.waves[0].nodes[0].strategy == "blueGreen"
        assert stage.waves[0].nodes[0].step == "scale-down-delay"
        assert [(run.name, run.state) for run in status.targets["web"].verifications][-1] == (
            "live-smoke",
            "passed",
        )

        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "succeeded"
        # Retired: only the new version runs.
        assert await settle(reconciler, {f"stable:{NEW}"}) == {f"stable:{NEW}": preview_pid}
        assert await served(live) == {NEW: 20}
        await assert_replays(client, [plan.delivery_id, f"{plan.delivery_id}--prod--web"])
    assert [step.rsplit("/", 1)[1] for step in steps_committed(gitops)] == ["preview", "promote", "retire"]
    final = show(gitops, "main", VALUES)
    assert (
        f"image:\n  tag: {NEW}" in final
        and "preview:\n  tag: null" in final
        and "previous:\n  tag: null" in final
    )


async def test_abort_before_the_switch_drops_the_preview(
    temporal_env: WorkflowEnvironment, tmp_path: Path, stack: tuple[str, LocalReconciler]
) -> None:
    gitops, reconciler = stack
    live = reconciler.proxy_urls()["web"]
    plan = blue_green_plan(tmp_path, gitops, reconciler, {"autoPromotionEnabled": False})
    old_pid = pids(reconciler)[f"stable:{OLD}"]
    client = temporal_env.client
    queue = queue_name()
    async with build_worker(client, WorkerSettings(state_dir=tmp_path / "state"), queue):
        await start(client, plan, queue)
        await wait_for(client, plan.delivery_id, state_of("preview", "awaiting-resume"), 60)
        assert set(pids(reconciler)) == {f"stable:{OLD}", f"preview:{NEW}"}
        await send_action(client, plan.delivery_id, "abort", HumanAction("bob", "preview looks wrong"))
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "aborted"
        status = await get_status(client, plan.delivery_id)
        assert status.targets["web"].state == "rolled-back"
        await assert_replays(client, [plan.delivery_id, f"{plan.delivery_id}--prod--web"])
    assert show(gitops, "main", VALUES) == SEED.strip()
    assert [step.rsplit("/", 1)[1] for step in steps_committed(gitops)] == ["preview", "rollback"]
    assert await settle(reconciler, {f"stable:{OLD}"}) == {f"stable:{OLD}": old_pid}
    assert await served(live) == {OLD: 20}


async def test_abort_after_the_switch_switches_back_to_the_warm_version_in_one_commit(
    temporal_env: WorkflowEnvironment, tmp_path: Path, stack: tuple[str, LocalReconciler]
) -> None:
    gitops, reconciler = stack
    live = reconciler.proxy_urls()["web"]
    # The post-promotion check waits for a human: the release is live, the old version warm.
    plan = blue_green_plan(
        tmp_path, gitops, reconciler, {"scaleDownDelaySeconds": 600, "postPromotionAnalysis": [{"pause": {}}]}
    )
    old_pid = pids(reconciler)[f"stable:{OLD}"]
    client = temporal_env.client
    queue = queue_name()
    async with build_worker(client, WorkerSettings(state_dir=tmp_path / "state"), queue):
        await start(client, plan, queue)
        await wait_for(client, plan.delivery_id, state_of("pause", "awaiting-resume"), 60)
        assert await served(live) == {NEW: 20}
        assert pids(reconciler)[f"previous:{OLD}"] == old_pid
        await send_action(client, plan.delivery_id, "abort", HumanAction("bob", "errors after the switch"))
        result = await handle_for(client, plan.delivery_id).result()
        assert result.phase == "aborted"
        await assert_replays(client, [plan.delivery_id, f"{plan.delivery_id}--prod--web"])
    # One rollback commit switched back; the old version's process, kept warm, takes live traffic again.
    assert [step.rsplit("/", 1)[1] for step in steps_committed(gitops)] == ["preview", "promote", "rollback"]
    assert show(gitops, "main", VALUES) == SEED.strip()
    assert await served(live) == {OLD: 20}
    assert await settle(reconciler, {f"stable:{OLD}"}) == {f"stable:{OLD}": old_pid}


def test_a_restored_file_keeps_no_preview_or_warm_version_left_by_another_delivery() -> None:
    """A rollback restores the file as it was before this delivery; a preview or a warm previous version that
    an older (superseded) delivery left there would come back with nobody left to retire it."""
    write = WritePlan("image.tag", "canary.weight", "canary.tag", "preview.tag", "previous.tag")
    left = b"image:\n  tag: v1\npreview:\n  tag: v2\nprevious:\n  tag: v0\n"
    assert (
        _without_canary(left, write) == b"image:\n  tag: v1\npreview:\n  tag: null\nprevious:\n  tag: null\n"
    )
    clean = b"image:\n  tag: v1\npreview:\n  tag: null\n"
    assert _without_canary(clean, write) == clean
    # Plans made before blue-green name no such keys: the file is restored as it was.
    assert _without_canary(left, WritePlan("image.tag", "canary.weight", "canary.tag")) == left


async def test_a_canary_promotion_still_starts_its_stable_process(
    tmp_path: Path, stack: tuple[str, LocalReconciler]
) -> None:
    """Only blue-green roles hand processes over: a canary's promotion starts the new stable version labelled
    `stable`, so the next release's analysis still compares canary with stable."""
    gitops, reconciler = stack
    work = tmp_path / "hand-edit"
    git("clone", "-q", gitops, str(work))

    def commit(text: str) -> str:
        (work / VALUES).write_text(text)
        git("-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qam", "edit", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    async def synced(sha: str) -> None:
        deadline = time.monotonic() + 30
        while not (await asyncio.to_thread(reconciler.sync, "web", sha)).get("healthy"):
            assert time.monotonic() < deadline, reconciler.status("web")
            await asyncio.sleep(0.2)

    await synced(commit(f"image:\n  tag: {OLD}\ncanary:\n  tag: {NEW}\n  weight: 50\n"))
    canary_pid = pids(reconciler)[f"canary:{NEW}"]
    await synced(commit(f"image:\n  tag: {NEW}\ncanary:\n  tag: {NEW}\n  weight: 0\n"))
    stable_pid = (await settle(reconciler, {f"stable:{NEW}"}))[f"stable:{NEW}"]
    assert stable_pid != canary_pid
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        port = next(p["port"] for p in reconciler.status("web")["processes"] if p["role"] == "stable")
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'track="stable"' in metrics and 'track="canary"' not in metrics
