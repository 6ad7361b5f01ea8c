"""Trigger latency: a signed GitHub push webhook to the gateway -> the delivery's first GitOps commit pushed.

Embedded stack: a Temporal dev server, a worker (`worker.build_worker`) and the gateway under uvicorn on a
loopback port, all real; the spec has no build or test steps, so what is measured is the gateway (signature,
spec match, start), Temporal (start, first workflow task, child start, activity dispatch) and the Git commit
and push. Each run pushes a new revision to the source repository first (outside the measured time) and
waits for the delivery to finish before the next run, so runs do not overlap. One warm-up run is not counted.

    .venv/bin/python bench/trigger_latency.py [--runs 20]

Prints one line per run and, last, `runs=N p50_ms=X p95_ms=Y` (goal: p50 under 1,000 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn
import yaml
from temporalio.client import Client

from aicd.activities import WorkerSettings
from aicd.client import handle_for
from aicd.dev.ports import free_port
from aicd.gateway import Gateway, GatewaySettings, create_app
from aicd.gateway.signatures import sign_github
from aicd.testing.engine import start_dev_server
from aicd.worker import build_worker

SECRET = uuid.uuid4().hex
APP = "bench-trigger"


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def bare_repo(root: Path, name: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A bare repository with one commit, and the work tree that seeded it."""
    bare, work = root / f"{name}.git", root / f"{name}-work"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("init", "-q", "-b", "main", str(work))
    for path, content in files.items():
        (work / path).write_text(content)
    git("add", "-A", cwd=work)
    commit(work)
    git("push", "-q", str(bare), "main:main", cwd=work)
    return bare, work


def commit(work: Path) -> str:
    git(
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@localhost",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
        cwd=work,
    )
    return git("rev-parse", "HEAD", cwd=work)


def head(bare: Path) -> str:
    """The branch head, read the way git stores it (loose ref, else packed-refs): cheap enough to poll."""
    loose = bare / "refs" / "heads" / "main"
    with contextlib.suppress(FileNotFoundError):
        return loose.read_text().strip()
    for line in (bare / "packed-refs").read_text().splitlines():
        if line.endswith(" refs/heads/main"):
            return line.split(" ", 1)[0]
    raise RuntimeError("no main branch")


@contextlib.asynccontextmanager
async def gateway_server(gateway: Gateway, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(
        create_app(gateway), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def one_run(
    web: httpx.AsyncClient, source: Path, source_work: Path, gitops: Path, client: Client
) -> tuple[float, float]:
    revision = commit(source_work)
    git("push", "-q", str(source), "HEAD:refs/heads/release/bench", cwd=source_work)
    before = head(gitops)
    payload = {
        "ref": "refs/heads/release/bench",
        "before": "0" * 40,
        "after": revision,
        "deleted": False,
        "repository": {"clone_url": str(source)},
        "pusher": {"name": "bench"},
    }
    body = json.dumps(payload).encode()
    headers = {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": str(uuid.uuid4()),
        "x-hub-signature-256": sign_github(SECRET, body),
    }
    started = time.perf_counter()
    answer = await web.post("/hooks/github", content=body, headers=headers)
    answered = time.perf_counter()
    if answer.status_code != 200 or answer.json().get("result") != "started":
        raise RuntimeError(f"webhook not accepted: {answer.status_code} {answer.text}")
    while head(gitops) == before:
        await asyncio.sleep(0.001)
    committed = time.perf_counter()
    trailers = git("--git-dir", str(gitops), "log", "-1", "--format=%(trailers:only,unfold)", "main")
    if f"Aicd-Delivery: {APP}@{revision}" not in trailers:
        raise RuntimeError(f"first commit is not this delivery's: {trailers}")
    result = await handle_for(client, answer.json()["deliveries"][0]["delivery_id"]).result()
    if result.phase != "succeeded":
        raise RuntimeError(f"delivery {result.delivery_id} {result.phase}: {result.reason}")
    return (answered - started) * 1000, (committed - started) * 1000


async def main(runs: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="aicd-bench-") as tmp:
        root = Path(tmp)
        source, source_work = bare_repo(root, "source", {"README": "bench\n"})
        gitops, _ = bare_repo(root, "gitops", {"values.yaml": "image:\n  tag: v0\n"})
        spec_dir = root / "specs"
        spec_dir.mkdir()
        document = {
            "apiVersion": "aicd.dev/v1alpha1",
            "kind": "DeliverySpec",
            "metadata": {"name": APP},
            "spec": {
                "source": {"repo": str(source), "branches": ["release/*"]},
                "gitops": {"repo": str(gitops), "branch": "main"},
                "targets": {"web": {"kind": "git", "path": "values.yaml"}},
                "stages": [
                    {
                        "name": "staging",
                        "targets": ["web"],
                        "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
                    }
                ],
            },
        }
        (spec_dir / f"{APP}.yaml").write_text(yaml.safe_dump(document))
        env = await start_dev_server()
        try:
            queue = f"bench-{uuid.uuid4().hex[:8]}"
            gateway = Gateway(
                GatewaySettings(specs_dir=spec_dir, task_queue=queue, github_secret=SECRET), client=env.client
            )
            port = free_port()
            async with build_worker(env.client, WorkerSettings(state_dir=root / "state"), queue):
                async with gateway_server(gateway, port):
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:
                        warm_answer, warm_commit = await one_run(web, source, source_work, gitops, env.client)
                        print(
                            f"warm-up: answered {warm_answer:.1f} ms, first GitOps commit {warm_commit:.1f} ms (not counted)"
                        )
                        figures = []
                        for index in range(runs):
                            answered, committed = await one_run(web, source, source_work, gitops, env.client)
                            figures.append(committed)
                            print(
                                f"run {index + 1:2d}: webhook answered {answered:7.1f} ms, first GitOps commit {committed:7.1f} ms"
                            )
        finally:
            await env.shutdown()
    ordered = sorted(figures)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    print(f"runs={len(figures)} p50_ms={statistics.median(figures):.1f} p95_ms={p95:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
