"""The `local` target end to end: a real bare GitOps repo, real demo-app processes, the reconciler, its
traffic-splitting proxy, and the LocalDriver waiting on it."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from temporalio.exceptions import ApplicationError

from aicd.activities.drivers import driver_for
from aicd.activities.drivers.base import SyncFailed, SyncRequest
from aicd.activities.drivers.local import LocalDriver
from aicd.dev.demo_app import AppConfig, ConfigError, parse_config
from aicd.dev.demo_app import build as demo_build
from aicd.dev.demo_app.app import create_app
from aicd.dev.loadgen import LoadGenerator, require_loopback
from aicd.dev.ports import free_port
from aicd.dev.processes import wait_gone
from aicd.dev.reconciler import Desired, LocalReconciler, LocalTarget, ValueKeys, parse_values

GOOD, BAD, SICK, NEXT = "a1b2c3d", "bad0bad", "5ick000", "c0ffee1"
VALUES = "apps/demo/dev/values.yaml"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


class GitOpsRepo:
    """A bare GitOps repo plus a working clone to commit to, like a person or the engine would."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.bare = root / "gitops.git"
        self.work = root / "gitops-work"
        self.branch = branch
        self._git(root, "init", "-q", "--bare", f"--initial-branch={branch}", str(self.bare))
        self._git(root, "clone", "-q", str(self.bare), str(self.work))
        self._git(self.work, "checkout", "-q", "-B", branch)

    @staticmethod
    def _git(cwd: Path, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit(self, files: dict[str, str], message: str) -> str:
        for path, text in files.items():
            (self.work / path).parent.mkdir(parents=True, exist_ok=True)
            (self.work / path).write_text(text)
            self._git(self.work, "add", path)
        self._git(self.work, "commit", "-q", "-m", message)
        return self.push()

    def revert(self, commits: str = "HEAD") -> str:
        """`git revert` (a commit or a range such as A..HEAD), as on-call would do by hand."""
        self._git(self.work, "revert", "--no-edit", commits)
        return self.push()

    def push(self) -> str:
        self._git(self.work, "push", "-q", "origin", f"HEAD:refs/heads/{self.branch}")
        return self._git(self.work, "rev-parse", "HEAD")


def values(stable: str, canary: str | None = None, weight: int = 0) -> str:
    text = f"image:\n  tag: {stable}\n"
    if canary is not None:
        text += f"canary:\n  tag: {canary}\n  weight: {weight}\n"
    return text


def make_artifacts(root: Path, configs: dict[str, str]) -> Path:
    artifacts = root / "artifacts"
    for tag, app_yaml in configs.items():
        source = root / "src" / tag
        source.mkdir(parents=True)
        (source / "app.yaml").write_text(app_yaml)
        assert demo_build.main(["--source", str(source), "--out", str(artifacts), "--tag", tag]) == 0
    return artifacts


def request_for(
    target: str, revision: str, repo: GitOpsRepo, timeout_s: float = 30.0, **config: Any
) -> SyncRequest:
    return SyncRequest(
        delivery_id="delivery-demo-0000000",
        stage="dev",
        target=target,
        kind="local",
        config={"path": VALUES, **config},
        gitops_repo=str(repo.bare),
        gitops_branch=repo.branch,
        revision=revision,
        step="dev/dev/0-setWeight",
        timeout_s=timeout_s,
    )


async def versions_served(proxy: str, n: int) -> tuple[collections.Counter[str], collections.Counter[int]]:
    versions: collections.Counter[str] = collections.Counter()
    codes: collections.Counter[int] = collections.Counter()
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        for _ in range(n):
            response = await client.get(f"{proxy}/")
            versions[response.headers["x-version"]] += 1
            codes[response.status_code] += 1
    return versions, codes


def pids_of(status: dict[str, Any]) -> dict[str, int]:
    return {f"{p['role']}:{p['version']}": p["pid"] for p in status["processes"]}


def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def demo_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "aicd.dev.demo_app" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


async def test_local_target_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = GitOpsRepo(tmp_path)
    artifacts = make_artifacts(
        tmp_path,
        {GOOD: "error_ratio: 0.0\n", BAD: "error_ratio: 0.5\n", SICK: "unhealthy: true\n", NEXT: "{}\n"},
    )
    first = repo.commit({VALUES: values(GOOD)}, "deploy stable")
    reconciler = LocalReconciler(
        repo.bare,
        "main",
        {"dev": {"path": VALUES, "app": "demo"}},
        artifacts,
        tmp_path / "state",
        poll_interval=0.2,
    )
    monkeypatch.setenv("AICD_RECONCILER_URL", reconciler.start())  # as `aicd dev` sets it for the worker
    driver = LocalDriver(poll_interval=0.1)
    seen: set[int] = set()
    try:
        # 1. The stable version serves through the proxy once the driver reports the revision healthy.
        beats: list[Any] = []
        result = await driver.sync(request_for("dev", first, repo), beats.append)
        assert result.healthy and result.revision == first
        assert result.details["stable"] == GOOD and result.details["canary"] is None
        proxy = reconciler.proxy_urls()["dev"]
        versions, codes = await versions_served(proxy, 30)
        assert versions == {GOOD: 30} and codes == {200: 30}
        status = reconciler.status("dev")
        stable_pid = pids_of(status)[f"stable:{GOOD}"]
        seen.add(stable_pid)
        assert os.getpgid(stable_pid) == stable_pid  # its own process group

        # 2. Canary at weight 50: a second process starts and the proxy splits requests between them.
        canary_on = repo.commit({VALUES: values(GOOD, BAD, 50)}, "canary 50")
        result = await driver.sync(request_for("dev", canary_on, repo), beats.append)
        assert result.healthy and result.details["weight"] == 50
        versions, codes = await versions_served(proxy, 200)
        assert set(versions) == {GOOD, BAD}
        assert 60 <= versions[BAD] <= 140, versions  # ~100 expected; binomial bounds far beyond 5 sigma
        assert codes[500] > 0  # the bad release really fails requests
        status = reconciler.status("dev")
        pids = pids_of(status)
        assert pids[f"stable:{GOOD}"] == stable_pid  # unchanged version: same process
        canary_pid = pids[f"canary:{BAD}"]
        seen.add(canary_pid)

        # 3. Weight change only: both processes are reused, the split follows the new weight.
        canary_20 = repo.commit({VALUES: values(GOOD, BAD, 20)}, "canary 20")
        result = await driver.sync(request_for("dev", canary_20, repo), beats.append)
        assert result.healthy and result.details["weight"] == 20
        assert pids_of(reconciler.status("dev")) == pids
        versions, _ = await versions_served(proxy, 200)
        assert 15 <= versions[BAD] <= 70, versions  # ~40 expected

        # 4. On-call reverts the canary commits by hand; the reconciler applies it without any sync call.
        reverted = repo.revert(f"{first}..HEAD")
        wait_for(
            lambda: (s := reconciler.status("dev"))["revision"] == reverted and s["healthy"],
            what="the manual revert to be applied",
        )
        assert wait_gone([canary_pid]) == []
        assert pids_of(reconciler.status("dev")) == {f"stable:{GOOD}": stable_pid}
        versions, _ = await versions_served(proxy, 30)
        assert versions == {GOOD: 30}

        # 5. An unhealthy release never becomes healthy: SyncFailed carrying the reconciler's message,
        #    while the stable version keeps serving all traffic.
        sick = repo.commit({VALUES: values(GOOD, SICK, 10)}, "canary sick")
        with pytest.raises(SyncFailed, match=r"canary 5ick000 not healthy yet: /health answered 503"):
            await driver.sync(request_for("dev", sick, repo, timeout_s=2.0), beats.append)
        assert beats, "the driver heartbeats while it waits"
        status = reconciler.status("dev")
        assert status["phase"] == "Progressing" and not status["healthy"]
        seen.update(pids_of(status).values())
        versions, _ = await versions_served(proxy, 20)
        assert versions == {GOOD: 20}

        # 6. A revision that is not on the branch never counts as applied.
        with pytest.raises(SyncFailed, match="not on branch main"):
            await driver.sync(request_for("dev", "0" * 40, repo, timeout_s=0.5), beats.append)

        # 7. The revert of the sick canary (git revert) returns to stable only.
        back = repo.revert()
        result = await driver.sync(request_for("dev", back, repo), beats.append)
        assert result.healthy and result.details["canary"] is None

        # 8. A new stable version (a promotion) replaces the old process once the new one is healthy.
        promoted = repo.commit({VALUES: values(NEXT)}, "promote")
        result = await driver.sync(request_for("dev", promoted, repo), beats.append)
        assert result.healthy and result.details["stable"] == NEXT
        assert wait_gone([stable_pid]) == []
        versions, _ = await versions_served(proxy, 20)
        assert versions == {NEXT: 20}
    finally:
        with contextlib.suppress(Exception):
            seen.update(p["pid"] for p in reconciler.status("dev")["processes"])
        reconciler.stop()
    assert wait_gone(sorted(seen)) == []
    assert demo_children() == []


async def test_reconciler_registers_a_target_on_first_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = GitOpsRepo(tmp_path)
    artifacts = make_artifacts(tmp_path, {GOOD: "{}\n"})
    sha = repo.commit({VALUES: values(GOOD)}, "deploy")
    with LocalReconciler(repo.bare, "main", [], artifacts, tmp_path / "state") as reconciler:
        # The reconciler was not told about "late": the driver's first sync registers it from the target's
        # config (path, app), the way `aicd dev` works for any spec with local targets.
        request = request_for("late", sha, repo, reconciler=reconciler.url, app="shop")
        result = await driver_for("local").sync(request, lambda *_: None)
        assert result.healthy
        async with httpx.AsyncClient(trust_env=False) as client:
            metrics = (await client.get(f"{_process_url(reconciler, 'late')}/metrics")).text
        assert 'app="shop",track="stable",version="a1b2c3d"' in metrics
        with pytest.raises(ApplicationError, match="unknown local target"):
            await LocalDriver().sync(
                request_for("nope", sha, repo, reconciler=reconciler.url, path=None), lambda *_: None
            )
    assert demo_children() == []


def _process_url(reconciler: LocalReconciler, target: str) -> str:
    (process,) = reconciler.status(target)["processes"]
    return f"http://127.0.0.1:{process['port']}"


async def test_driver_errors_without_a_reachable_reconciler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = GitOpsRepo(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    # Unreachable: a plain exception, which Temporal retries (not SyncFailed, which would not be).
    with pytest.raises(httpx.ConnectError):
        await LocalDriver().sync(request_for("dev", "f" * 40, repo, reconciler=dead), lambda *_: None)
    # No URL at all: a configuration error, not retried.
    monkeypatch.delenv("AICD_RECONCILER_URL", raising=False)
    with pytest.raises(ApplicationError) as info:
        await LocalDriver().sync(request_for("dev", "f" * 40, repo), lambda *_: None)
    assert info.value.non_retryable


def test_reconciler_process_cleans_up_on_sigterm_and_sigkill(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path)
    artifacts = make_artifacts(tmp_path, {GOOD: "{}\n"})
    repo.commit({VALUES: values(GOOD)}, "deploy")
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"dev": VALUES}))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        state = tmp_path / f"state-{sig.name}"
        argv = [sys.executable, "-m", "aicd.dev.reconciler", "--gitops", str(repo.bare)]
        argv += ["--targets", str(targets), "--artifacts", str(artifacts), "--state", str(state)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            with httpx.Client(trust_env=False) as client:
                status = wait_for(
                    lambda c=client, u=info["url"]: (s := c.get(f"{u}/targets/dev").json())["healthy"] and s,
                    what="the CLI reconciler to become healthy",
                )
            app_pids = [p["pid"] for p in status["processes"]]
            assert app_pids and (state / "reconciler.json").exists()
            proc.send_signal(sig)
            proc.wait(timeout=20)
            # SIGTERM: stopped by the reconciler; SIGKILL: the apps notice their parent is gone and exit.
            assert wait_gone(app_pids, timeout=10) == []
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if sig == signal.SIGTERM:
            assert proc.returncode == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (values(GOOD), Desired(GOOD, None, 0)),
        (values(GOOD, BAD, 10), Desired(GOOD, BAD, 10)),
        (values(GOOD, GOOD, 50), Desired(GOOD, None, 0)),  # canary == stable: nothing extra runs
        (values(GOOD, BAD, 0), Desired(GOOD, None, 0)),
        (values("1234567", "1e10000", 100), Desired("1234567", "1e10000", 100)),  # tags stay strings
    ],
)
def test_parse_values(text: str, expected: Desired) -> None:
    assert parse_values(text) == expected


def test_parse_values_custom_keys_and_errors() -> None:
    keys = ValueKeys(image="app.version", canary="rollout.canary", weight="rollout.weight")
    text = "app: {version: v1}\nrollout: {canary: v2, weight: '25'}\n"
    assert parse_values(text, keys) == Desired("v1", "v2", 25)
    with pytest.raises(ValueError, match=r"no `image.tag`"):
        parse_values("canary: {tag: x, weight: 5}\n")
    with pytest.raises(ValueError, match=r"0\.\.100"):
        parse_values(values(GOOD, BAD, 150))
    with pytest.raises(ValueError, match="must be a number"):
        parse_values("image: {tag: a}\ncanary: {tag: b, weight: lots}\n")
    with pytest.raises(ValueError, match="`path`"):
        LocalTarget.from_config("x", {"app": "demo"})


def _asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo")


async def test_demo_app_config_and_metrics() -> None:
    app = create_app(AppConfig(error_ratio=1.0), version="v9", track="canary", app_name="shop")
    async with _asgi_client(app) as client:
        response = await client.get("/")
        assert response.status_code == 500 and response.headers["x-version"] == "v9"
        assert (await client.get("/health")).status_code == 200
        text = (await client.get("/metrics")).text
    assert 'http_requests_total{app="shop",track="canary",version="v9",code="500"} 1' in text
    assert 'http_requests_total{app="shop",track="canary",version="v9",code="200"} 0' in text
    assert 'http_request_duration_seconds_bucket{app="shop",track="canary",version="v9",le="+Inf"} 1' in text
    async with _asgi_client(create_app(AppConfig(unhealthy=True), version="v1", track="stable")) as client:
        assert (await client.get("/health")).status_code == 503
    with pytest.raises(ConfigError, match=r"error_ratio must be within 0\.\.1"):
        parse_config({"error_ratio": 2})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"error_rate": 0.1})


def test_build_is_idempotent_and_artifacts_immutable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    assert demo_build.main(["--source", str(source), "--out", str(tmp_path / "out"), "--tag", "t1"]) == 2
    assert "no app.yaml" in capsys.readouterr().err
    (source / "app.yaml").write_text("error_ratio: 0.1\n")
    argv = ["--source", str(source), "--out", str(tmp_path / "out"), "--tag", "t1"]
    assert demo_build.main(argv) == 0
    assert demo_build.main(argv) == 0  # a retried build step succeeds
    assert (tmp_path / "out" / "t1" / "app.yaml").read_text() == "error_ratio: 0.1\n"
    (source / "app.yaml").write_text("error_ratio: 0.9\n")
    assert demo_build.main(argv) == 2
    assert "tags are immutable" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "127.evil.example.com", "::"])
def test_the_reconciler_api_binds_only_to_loopback(tmp_path: Path, host: str) -> None:
    """Its API has no authentication: anything that could be reached from another machine is refused."""
    with pytest.raises(ValueError, match="bind it to loopback"):
        LocalReconciler(tmp_path / "gitops.git", "main", [], tmp_path, tmp_path / "state", host=host)


def test_loadgen_only_targets_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        LoadGenerator(["http://example.com"])
    assert require_loopback("http://localhost:8080/") == "http://localhost:8080"
    port = free_port()
    # Nothing listens: requests fail fast and are counted, the generator stays bounded and stops.
    with LoadGenerator([f"http://127.0.0.1:{port}"], rate=50, timeout=0.5) as generator:
        time.sleep(0.5)
    stats = generator.stats()
    assert stats.sent > 5 and stats.failed == stats.sent
