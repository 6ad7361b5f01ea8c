"""Step overhead: a delivery of N setWeight steps on a `git` target against the floor of the same N
commits and pushes done directly with git, measured in one run.

The breakdown (from the target workflow's history, per step): waiting for a worker (write activity scheduled
-> started), the write itself (started -> completed: fetch check, edit, commit, push, sync), and the
workflow's own turn between one step's write and the next (completed -> next scheduled: a workflow task,
status, timers). The write is split further by timing the functions of the write path in the (in-process)
worker, each part's own time without the parts it calls (`PARTS`), summed over the whole delivery (its
first clone and its gate reads too) and divided by its writes; `other` is the rest of the activity (its
thread hand-off, heartbeats, Temporal's completion).

A second delivery starts as the first ends (`again_s`): a Temporal server that reads its task queues at a
limited rate delays back-to-back tasks once its burst is spent (aicd.dev.temporal.DEV_SERVER_DYNAMIC_CONFIG).

The floor and the two deliveries are repeated (`--reps`, default 3), the floor next to the deliveries it is
compared with, and the ratios are the medians of each repetition's: on this VM one floor of 20 pushes took
from 0.52 to 0.88 s within a few minutes, which alone moved a single ratio from 1.6 to 2.6. The breakdown is
the first repetition's (its first delivery runs with the parts timed).

Last line: steps=N delivery_s=X floor_s=Y overhead_ratio=Z again_s=.. again_ratio=.. queue_ms=.. write_ms=..
workflow_ms=.. wft_queue_ms=.. wft_ms=.. and
<part>_ms=.. per part of the write (goal: overhead_ratio <= 1.5)"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _stack import dev_server
from git.cmd import Git as GitCommand
from temporalio.client import Client, WorkflowHistory

from aicd.activities import gitops, steps
from aicd.client import handle_for, start_delivery
from aicd.messages import Trigger
from aicd.plan import DeliveryPlan
from aicd.testing.engine import commits, git, make_repo, plan_from, running_worker, spec_document

# (owner, attribute, part): the functions of a step's write path, timed while the bench runs.
PARTS: list[tuple[Any, str, str]] = [
    (gitops.GitOpsActivities, "_commit", "batching"),
    (gitops.GitOpsClone, "locked", "lock"),
    (gitops, "_remove_stale_git_locks", "lock files"),
    (gitops.GitOpsClone, "_open", "open"),
    (gitops.GitOpsClone, "_known_in_sync", "refresh"),
    (gitops.GitOpsClone, "refresh", "refresh"),
    (gitops, "open_objects", "open"),
    (gitops, "safe_file", "paths"),
    (gitops, "check_ownership", "ownership"),
    (gitops, "set_keys", "yaml"),
    (gitops, "get_key", "yaml"),
    (gitops, "commit_paths", "commit"),
    (gitops.ActivityFence, "ask", "fence"),
    (steps, "sync_target", "sync"),
]


class Spans:
    """Exclusive time per part (a part's time minus the parts it calls), summed over the run. A git process
    is its own part, `git <subcommand>`, whoever runs it."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.local = threading.local()

    @contextmanager
    def span(self, part: str) -> Iterator[None]:
        stack = self.local.__dict__.setdefault("stack", [])
        stack.append(0.0)  # time spent in the parts this one calls
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            inner = stack.pop()
            self.ms[part] += 1000 * (spent - inner)
            if stack:
                stack[-1] += spent

    def wrap(self, function: Callable[..., Any], part: str | Callable[..., str]) -> Callable[..., Any]:
        name = part if callable(part) else (lambda *args, **kwargs: part)
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()  # inclusive: other coroutines may run meanwhile
                try:
                    return await function(*args, **kwargs)
                finally:
                    self.ms[name(*args, **kwargs)] += 1000 * (time.perf_counter() - started)

            return timed_async
        if part == "lock":  # a context manager: time taking and releasing it, not what runs under it
            return self._timed_lock(function)
        if part == "fence":  # asking starts the question; the call it returns waits for the answer
            return self._timed_ask(function)

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.span(name(*args, **kwargs)):
                return function(*args, **kwargs)

        return timed

    def _timed_lock(self, locked: Callable[..., Any]) -> Callable[..., Any]:
        body = locked.__wrapped__  # the generator under @contextmanager

        @functools.wraps(body)
        def timed_lock(*args: Any, **kwargs: Any) -> Iterator[Any]:
            generator = body(*args, **kwargs)
            with self.span("lock"):
                value = next(generator)
            try:
                yield value
            finally:
                with self.span("lock"):
                    for _ in generator:
                        pass

        return contextmanager(timed_lock)

    def _timed_ask(self, ask: Callable[..., Callable[[], None]]) -> Callable[..., Callable[[], None]]:
        @functools.wraps(ask)
        def timed_ask(*args: Any, **kwargs: Any) -> Callable[[], None]:
            with self.span("fence"):
                answer = ask(*args, **kwargs)

            def timed_answer() -> None:
                with self.span("fence"):
                    answer()

            return timed_answer

        return timed_ask

    @contextmanager
    def installed(self) -> Iterator[None]:
        saved = []
        for owner, attribute, part in PARTS:
            original = owner.__dict__[attribute]
            saved.append((owner, attribute, original))
            setattr(owner, attribute, self.wrap(original, part))
        execute = GitCommand.execute
        saved.append((GitCommand, "execute", execute))
        GitCommand.execute = self.wrap(execute, _git_part)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for owner, attribute, original in reversed(saved):
                setattr(owner, attribute, original)


def _git_part(*args: Any, **kwargs: Any) -> str:
    command = args[1] if len(args) > 1 else kwargs.get("command", [])
    words = [word for word in command[1:] if not str(word).startswith("-")] if command else []
    return f"git {words[0]}" if words else "git"


def floor_seconds(root: Path, steps: int) -> float:
    """N commits + pushes of the same kind of edit, with plain git in a clone."""
    root.mkdir(parents=True, exist_ok=True)
    bare, _ = make_repo(root, "floor", {"apps/web/values.yaml": "image:\n  tag: v0\ncanary:\n  weight: 0\n"})
    work = root / "floor-clone"
    git("clone", "-q", bare, str(work))
    started = time.perf_counter()
    for step in range(steps):
        (work / "apps/web/values.yaml").write_text(
            f"image:\n  tag: v0\ncanary:\n  tag: v1\n  weight: {step}\n"
        )
        git("-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qam", f"step {step}", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
    return time.perf_counter() - started


WRITES = {"apply_step", "gitops_commit"}


def breakdown_ms(history: WorkflowHistory) -> dict[str, float]:
    """Mean milliseconds per write: queue (scheduled -> started), write (started -> completed), workflow
    (completed -> the next write scheduled), and within the workflow's turn its workflow tasks: waiting for a
    worker (wft_queue: scheduled -> started) and run by the SDK and the workflow's code (wft: started ->
    completed), over the workflow tasks after a write."""
    at = {event.event_id: event.event_time.ToMicroseconds() / 1000 for event in history.events}
    queue, write, workflow_turn, last_done = [], [], [], None
    wft_queue, wft = [], []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name in WRITES and last_done:
                workflow_turn.append(at[event.event_id] - last_done)
        elif event.HasField("activity_task_started_event_attributes"):
            queue.append(
                at[event.event_id] - at[event.activity_task_started_event_attributes.scheduled_event_id]
            )
        elif event.HasField("activity_task_completed_event_attributes"):
            write.append(
                at[event.event_id] - at[event.activity_task_completed_event_attributes.started_event_id]
            )
            last_done = at[event.event_id]
        elif event.HasField("workflow_task_started_event_attributes") and last_done:
            wft_queue.append(
                at[event.event_id] - at[event.workflow_task_started_event_attributes.scheduled_event_id]
            )
        elif event.HasField("workflow_task_completed_event_attributes") and last_done:
            wft.append(
                at[event.event_id] - at[event.workflow_task_completed_event_attributes.started_event_id]
            )
    return {
        "writes": len(write),
        **{
            name: sum(values) / len(values) if values else 0.0
            for name, values in (
                ("queue", queue),
                ("write", write),
                ("workflow", workflow_turn),
                ("wft_queue", wft_queue),
                ("wft", wft),
            )
        },
    }


def _delivery_plan(root: Path, name: str, steps: int) -> tuple[DeliveryPlan, str]:
    """A delivery of `steps` setWeight steps into a GitOps repo of its own; (plan, the repo)."""
    source, revision = make_repo(root, f"{name}-source", {"README": "x\n"})
    gitops, _ = make_repo(root, f"{name}-gitops", {"apps/web/values.yaml": "image:\n  tag: v0\n"})
    weights = [round(100 * (index + 1) / steps) for index in range(steps)]
    document = spec_document(
        name,
        source,
        gitops,
        {"web": {"kind": "git", "path": "apps/web/values.yaml"}},
        [
            {
                "name": "prod",
                "targets": ["web"],
                "strategy": {"canary": {"steps": [{"setWeight": w} for w in weights]}},
            }
        ],
    )
    return plan_from(document, revision), gitops


async def _run(client: Client, plan: DeliveryPlan, queue: str) -> float:
    started = time.perf_counter()
    await start_delivery(client, plan, Trigger("cli", "bench"), queue=queue)
    result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded", result.reason
    return time.perf_counter() - started


@dataclass
class Rep:
    """One repetition: the floor, then a delivery, then another started as it ended (seconds per commit)."""

    floor: float
    delivery: float
    again: float


async def measure(root: Path, steps: int, reps: int) -> tuple[list[Rep], dict[str, float], dict[str, float]]:
    """`reps` repetitions of the floor and the two deliveries, each delivery into a GitOps repo of its own; and
    the first delivery's history breakdown per write and the write's parts (ms per write). The floor is taken
    next to the deliveries it is compared with: on this VM git's speed drifts by a third within a minute."""
    results: list[Rep] = []
    spans = Spans()
    timeline: dict[str, float] = {}
    parts: dict[str, float] = {}
    async with dev_server() as env, running_worker(env.client, root / "state") as queue:
        for rep in range(reps):
            floor = floor_seconds(root / f"floor-{rep}", steps)
            plan, gitops_repo = _delivery_plan(root, f"bench-{rep}", steps)
            again, _ = _delivery_plan(root, f"again-{rep}", steps)
            with spans.installed() if rep == 0 else nullcontext():
                seconds = await _run(env.client, plan, queue)
            again_seconds = await _run(env.client, again, queue)
            made = [entry for entry in commits(gitops_repo) if "Aicd-Step" in entry]
            assert len(made) == steps + 1, len(made)  # the steps and the promotion
            # The floor pushes N commits; the delivery pushes N + 1 (promotion): compare per commit.
            per_commit = steps / (steps + 1)
            results.append(Rep(floor, seconds * per_commit, again_seconds * per_commit))
            if rep == 0:
                history = await env.client.get_workflow_handle(
                    f"{plan.delivery_id}--prod--web"
                ).fetch_history()
                timeline = breakdown_ms(history)
                writes = timeline["writes"] or 1
                parts = {
                    part: ms / writes for part, ms in sorted(spans.ms.items(), key=lambda item: -item[1])
                }
                parts["other"] = max(0.0, timeline["write"] - sum(parts.values()))
    return results, timeline, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3, help="repetitions (the ratios are their medians)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        reps, parts, write_parts = asyncio.run(measure(Path(root), args.steps, args.reps))
    for index, rep in enumerate(reps, 1):
        print(
            f"rep {index}: floor {args.steps} commits+pushes with git {rep.floor:.3f}s"
            f" ({1000 * rep.floor / args.steps:.1f} ms each); delivery of {args.steps} setWeight steps"
            f" {rep.delivery:.3f}s (x{rep.delivery / rep.floor:.2f}); another started as it ended"
            f" {rep.again:.3f}s (x{rep.again / rep.floor:.2f})"
        )
    floor = statistics.median(rep.floor for rep in reps)
    delivery = statistics.median(rep.delivery for rep in reps)
    again = statistics.median(rep.again for rep in reps)
    overhead_ratio = statistics.median(rep.delivery / rep.floor for rep in reps)
    again_ratio = statistics.median(rep.again / rep.floor for rep in reps)
    print(
        "per step (first delivery): waiting for a worker {queue:.1f} ms, the write (check, edit, commit, push,"
        " sync) {write:.1f} ms, the workflow's turn {workflow:.1f} ms (its workflow task: waiting for a worker"
        " {wft_queue:.1f} ms, run {wft:.1f} ms)".format(**parts)
    )
    print("the write, ms per step: " + ", ".join(f"{part} {ms:.1f}" for part, ms in write_parts.items()))
    print(
        f"steps={args.steps} reps={len(reps)} delivery_s={delivery:.3f} floor_s={floor:.3f}"
        f" overhead_ratio={overhead_ratio:.2f} again_s={again:.3f} again_ratio={again_ratio:.2f}"
        f" queue_ms={parts['queue']:.1f} write_ms={parts['write']:.1f} workflow_ms={parts['workflow']:.1f}"
        f" wft_queue_ms={parts['wft_queue']:.1f} wft_ms={parts['wft']:.1f} "
        + " ".join(f"{part.replace(' ', '_')}_ms={ms:.1f}" for part, ms in write_parts.items())
    )


if __name__ == "__main__":
    main()
