"""Rollback latency: a stage of 5 targets mid-canary; time from `abort` accepted to the rollback commits
of all 5 pushed, over repeated runs.

Last line: targets=5 runs=N p50_ms=X p95_ms=Y   (goal: p50 under 1,000 ms)"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

from _stack import dev_server, percentile
from temporalio.client import Client

from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger
from aicd.testing.engine import make_repo, plan_from, running_worker, spec_document

TARGETS = [f"edge-{index}" for index in range(5)]


def rollback_commits(gitops: str) -> int:
    log = subprocess.run(
        ["git", "--git-dir", gitops, "log", "--format=%(trailers:key=Aicd-Step,valueonly)", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in log.splitlines() if line.endswith("/rollback"))


async def one_run(client: Client, queue: str, root: Path, run: int) -> float:
    source, revision = make_repo(root, f"source-{run}", {"README": f"{run}\n"})
    gitops, _ = make_repo(
        root, f"gitops-{run}", {f"apps/{name}.yaml": "image:\n  tag: v0\n" for name in TARGETS}
    )
    document = spec_document(
        "rollback",
        source,
        gitops,
        {name: {"kind": "git", "path": f"apps/{name}.yaml"} for name in TARGETS},
        [
            {
                "name": "prod",
                "targets": TARGETS,
                "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]}},
            }
        ],
    )
    plan = plan_from(document, revision)
    await start_delivery(client, plan, Trigger("cli", "bench"), queue=queue)
    while True:  # mid-canary: every target committed its first weight and waits for a human
        status = await get_status(client, plan.delivery_id)
        if len(status.targets) == len(TARGETS) and all(
            t.state == "awaiting-resume" for t in status.targets.values()
        ):
            break
        await asyncio.sleep(0.02)
    await send_action(client, plan.delivery_id, "abort", HumanAction("bench", "latency run"))
    accepted = time.perf_counter()
    while rollback_commits(gitops) < len(TARGETS):
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - accepted
    result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "aborted", result
    return elapsed


async def main_async(runs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as root:
        async with dev_server() as env, running_worker(env.client, Path(root) / "state") as queue:
            return [await one_run(env.client, queue, Path(root), run) for run in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    latencies = [1000 * value for value in asyncio.run(main_async(args.runs))]
    print("abort -> 5 rollback commits pushed (ms): " + ", ".join(f"{value:.0f}" for value in latencies))
    print(
        f"targets={len(TARGETS)} runs={args.runs} p50_ms={percentile(latencies, 0.5):.0f} p95_ms={percentile(latencies, 0.95):.0f}"
    )


if __name__ == "__main__":
    main()
