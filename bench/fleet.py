"""Edge fleet benchmark on the embedded stack: a real Temporal dev server, a worker in this process, real
bare Git repos with one values file per site (`git` sites).

Scenarios (`--scenario`, default `all`):
- deliver: a fleet of 1,000 and one of 10,000 sites (`--sites 10000 100000` for the next order of
  magnitude), batches 1%/10%/50%/100%, delivered end to end after an unmeasured 500-site warm-up. Per
  fleet: wall time from start to result, commits made, the longest workflow history of the delivery (every
  run of every workflow), and the worker's peak RSS (this process, sampled every 100 ms).
  The smaller fleet is delivered three times (`--small-runs`) and its median taken: on a disk its wall
  time varies by half from run to run (each line prints `io_stall_s`, the seconds some task waited on I/O),
  which alone moves the ratio by as much. `--dir /dev/shm` measures aicd without the disk.
  The per-site cost ratio is (seconds per site at the larger) / (seconds per site at the smaller); goal <= 1.2.
- control: the 10,000-site fleet with a timed pause after each batch: pause the delivery mid-fleet (after
  batch 2, in a run that continued as new), check that no batch moves while paused, resume, then abort
  after batch 3 and time the rollback of the 5,000 touched site files (checked byte for byte).

Run from the repo root: `.venv/bin/python bench/fleet.py [--scenario deliver|control|all]`.
Last line: `sites=1000,10000 seconds=A,B per_site_ratio=R max_history_events=H peak_rss_mb=M`
(with `--scenario control` alone: `control sites=10000 ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from temporalio.client import Client

from aicd.client import get_status, handle_for, send_action, start_delivery
from aicd.messages import DeliveryStatus, HumanAction, TargetStatus, Trigger
from aicd.testing.engine import make_repo, plan_from, running_worker, spec_document, start_dev_server

SITE_VALUES = "# edge values for {site}\nimage:\n  repository: example/web\n  tag: v0\nregion: {site}\n"
PATH = "apps/web/edge/{{ site }}/values.yaml"
HISTORY_WARNING = 10_240
WARM_UP_SITES = 500


class RssSampler:
    """Peak resident memory of this process (the worker runs in it), sampled in a thread."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.process = psutil.Process()
        self.every_s = every_s
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


@dataclass
class Fleet:
    sites: int
    plan: Any
    gitops: str
    seed: str


def make_fleet(root: Path, count: int, *, steps: list[dict[str, Any]] | None = None) -> Fleet:
    names = [f"pop-{index:05d}" for index in range(count)]
    files = {f"apps/web/edge/{name}/values.yaml": SITE_VALUES.format(site=name) for name in names}
    files["fleets/edge.yaml"] = "".join(f"- {name}\n" for name in names)
    source, revision = make_repo(root, "source", {"README": "web\n"})
    gitops, seed = make_repo(root, "gitops", files)
    edge = {
        "kind": "edge",
        "sites": {"file": "fleets/edge.yaml"},
        "path": PATH,
        "batches": ["1%", "10%", "50%", "100%"],
        "maxFailures": "1%",
    }
    stage: dict[str, Any] = {"name": "edge", "targets": ["pops"]}
    if steps:
        stage["strategy"] = {"canary": {"steps": steps}}
    plan = plan_from(spec_document("web", source, gitops, {"pops": edge}, [stage]), revision)
    return Fleet(count, plan, gitops, seed)


def io_stalled_s() -> float:
    """Seconds in which some task of this machine waited on I/O since boot (Linux pressure stall information;
    0 where the kernel has none): how much of a run the disk, not aicd, took."""
    try:
        some = Path("/proc/pressure/io").read_text().splitlines()[0]
    except (OSError, IndexError):
        return 0.0
    return int(some.rpartition("total=")[2]) / 1e6


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def delivery_commits(gitops: str) -> list[str]:
    log = git("--git-dir", gitops, "log", "--reverse", "--format=%(trailers:key=Aicd-Step,valueonly)", "main")
    return [line for line in log.splitlines() if line.strip()]


def changed_since_seed(fleet: Fleet) -> int:
    return len(git("--git-dir", fleet.gitops, "diff", "--name-only", fleet.seed, "main").split())


async def longest_history(client: Client, delivery_id: str) -> tuple[int, int]:
    """(longest history in events, number of workflow runs) over every run of the delivery's workflows."""
    longest, runs = 0, 0
    async for execution in client.list_workflows(f"WorkflowId STARTS_WITH '{delivery_id}'"):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        longest, runs = max(longest, len(history.events)), runs + 1
    return longest, runs


async def wait_for(
    client: Client, delivery_id: str, predicate: Callable[[DeliveryStatus], bool], timeout: float = 600
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(await get_status(client, delivery_id)):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{delivery_id}: condition not reached in {timeout}s")


def pops(status: DeliveryStatus) -> TargetStatus:
    return status.targets.get("pops") or TargetStatus("pops", "edge", "edge")


async def deliver(client: Client, count: int, root: Path) -> tuple[float, int, int]:
    """(seconds, commits, longest history) of one fleet delivered end to end."""
    fleet = make_fleet(root, count)
    os.sync()  # the seed's files reach the disk now, not during the measured delivery
    async with running_worker(client, root / "state") as queue:
        began, stalled = time.perf_counter(), io_stalled_s()
        await start_delivery(client, fleet.plan, Trigger("cli", "bench"), queue=queue)
        result = await handle_for(client, fleet.plan.delivery_id).result()
        seconds = time.perf_counter() - began
        stalled = io_stalled_s() - stalled
    if result.phase != "succeeded":
        raise SystemExit(f"{count} sites: delivery {result.phase}: {result.reason}")
    made = delivery_commits(fleet.gitops)
    assert changed_since_seed(fleet) == count, "not every site file was updated"
    history, runs = await longest_history(client, fleet.plan.delivery_id)
    print(
        f"deliver sites={count} seconds={seconds:.2f} per_site_ms={1000 * seconds / count:.2f} commits={len(made)} workflow_runs={runs} longest_history={history} io_stall_s={stalled:.1f}",
        flush=True,
    )
    return seconds, len(made), history


async def control(client: Client, root: Path) -> int:
    """Pause, resume and abort on 10,000 sites; returns the longest history."""
    fleet = make_fleet(root, 10_000, steps=[{"pause": "2s"}, {"setWeight": 100}])
    delivery = fleet.plan.delivery_id
    async with running_worker(client, root / "state") as queue:
        began = time.perf_counter()
        await start_delivery(client, fleet.plan, Trigger("cli", "bench"), queue=queue)
        await wait_for(client, delivery, lambda s: len(pops(s).commits) == 2 and pops(s).step_kind == "pause")
        await send_action(client, delivery, "pause", HumanAction("oncall", "bench pause"))
        paused_at = time.perf_counter()
        await wait_for(client, delivery, lambda s: pops(s).state == "paused")
        await asyncio.sleep(3.0)  # longer than the pause step
        moved_while_paused = len(delivery_commits(fleet.gitops)) - 2
        await send_action(client, delivery, "resume", HumanAction("oncall"))
        print(
            f"control paused for {time.perf_counter() - paused_at:.1f}s; batches committed while paused: {moved_while_paused}",
            flush=True,
        )
        await wait_for(client, delivery, lambda s: len(pops(s).commits) == 3)
        abort_at = time.perf_counter()
        await send_action(client, delivery, "abort", HumanAction("oncall", "bench abort"))
        result = await handle_for(client, delivery).result()
        rollback_s = time.perf_counter() - abort_at
        total_s = time.perf_counter() - began
    steps = delivery_commits(fleet.gitops)
    left = changed_since_seed(fleet)
    history, runs = await longest_history(client, delivery)
    ok = (
        result.phase == "aborted"
        and moved_while_paused == 0
        and left == 0
        and steps[-1] == "edge/pops/rollback"
    )
    print(
        f"control sites=10000 ok={ok} phase={result.phase} commits={steps} rollback_seconds={rollback_s:.2f}"
        f" (5000 site files restored) total_seconds={total_s:.2f} files_differing_from_seed={left}"
        f" workflow_runs={runs} longest_history={history}",
        flush=True,
    )
    if not ok:
        raise SystemExit("control scenario failed")
    return history


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=("deliver", "control", "all"), default="all")
    parser.add_argument(
        "--sites",
        type=int,
        nargs=2,
        default=[1_000, 10_000],
        metavar=("SMALL", "LARGE"),
        help="the two fleet sizes delivered (e.g. 10000 100000); the ratio is per-site cost LARGE vs SMALL",
    )
    parser.add_argument(
        "--small-runs",
        type=int,
        default=3,
        help="times the smaller fleet is delivered (its median counts): its seconds vary most from run to run",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the repos and the worker's clones go (default: the system's temporary directory); e.g."
        " /dev/shm to measure aicd without the disk",
    )
    args = parser.parse_args()
    histories: list[int] = []
    seconds: dict[int, float] = {}
    env = await start_dev_server()
    try:
        with (
            RssSampler() as rss,
            tempfile.TemporaryDirectory(dir=args.dir, ignore_cleanup_errors=True) as tmp,
        ):
            if args.scenario in ("control", "all"):
                root = Path(tmp) / "control"
                root.mkdir()
                histories.append(await control(env.client, root))
            if args.scenario in ("deliver", "all"):
                # Unmeasured: the first delivery of the process pays its one-time costs (imports, the server's
                # first workflows), which would make the smaller fleet look dearer per site.
                warm = Path(tmp) / "warm-up"
                warm.mkdir()
                await deliver(env.client, WARM_UP_SITES, warm)
                for count, runs in zip(args.sites, (args.small_runs, 1), strict=True):
                    took = []
                    for run in range(runs):
                        root = Path(tmp) / f"deliver-{count}-{run}"
                        root.mkdir()
                        run_seconds, _commits, history = await deliver(env.client, count, root)
                        took.append(run_seconds)
                        histories.append(history)
                    seconds[count] = statistics.median(took)
    finally:
        await env.shutdown()
    worst = max(histories)
    assert worst < HISTORY_WARNING, f"a history reached {worst} events"
    if seconds:
        small, large = args.sites
        ratio = (seconds[large] / large) / (seconds[small] / small)
        print(
            f"sites={small},{large} seconds={seconds[small]:.2f},{seconds[large]:.2f} per_site_ratio={ratio:.2f}"
            f" max_history_events={worst} peak_rss_mb={rss.peak_mb:.0f}"
        )
    else:
        print(f"control sites=10000 max_history_events={worst} peak_rss_mb={rss.peak_mb:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
