"""Git poller, for source repositories no webhook can reach: every `source.pollInterval` it lists the
repository's branch heads with `git ls-remote` and starts a delivery for each new head of a branch that
matches the spec's globs.

What counts as new is remembered in a small JSON state file (app -> repository -> branch -> head). The first
time the poller sees an app's repository it only records the heads: turning the poller on must not deliver
every old release branch again. The memory matters beyond the workflow-ID idempotency, which only lasts as
long as Temporal retains closed workflows. A head is recorded only once its delivery was started (or found
already started), so a Temporal outage means a later retry, not a lost push.

Heads come from aicd.source (git as an argv list, no shell, usual transports only); branch names are data
that only ever reach the Trigger. A push seen by both the poller and a webhook is one delivery: both key it
on the same event (branch, before, after), and when their `before`s differ (the webhook saw a head in
between that a poll missed) the poller finds the webhook's delivery (aicd.client.earlier_push_delivery).
A head whose name Git itself refuses (a hostile or broken server can list anything) is skipped and logged.
Credentials in a repository URL never reach a message or the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

from aicd.client import earlier_push_delivery, start_delivery
from aicd.gateway.metrics import Metrics
from aicd.gateway.specs import LoadedSpec, SpecDirectory, branch_matches
from aicd.gitrefs import ref_problem
from aicd.messages import Trigger
from aicd.plan import REVISION, build_plan
from aicd.source import SourceError, list_heads

log = logging.getLogger("aicd.poller")
STATE_VERSION = 1


@dataclass
class PollResult:
    app: str
    branch: str
    revision: str
    outcome: str  # started | already started | error: ...
    delivery_id: str | None = None


def _head_problem(branch: str, sha: str) -> str | None:
    """Why a listed head must start nothing: a name Git refuses, or something that is not a commit SHA."""
    if problem := ref_problem(f"refs/heads/{branch}"):
        return f"Git refuses this branch name: it {problem}"
    if not REVISION.fullmatch(sha):
        return f"{sha[:80]!r} is not a commit SHA"
    return None


class PollState:
    """The heads seen per app, in a JSON file replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.apps: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == STATE_VERSION:
                    self.apps = dict(data.get("apps") or {})
            except (OSError, ValueError) as error:
                log.error("poller state %s unreadable (%s); starting from a fresh baseline", path, error)

    def heads(self, app: str, repo: str) -> dict[str, str] | None:
        entry = self.apps.get(app)
        if not entry or entry.get("repo") != repo:
            return None
        return dict(entry.get("heads") or {})

    def save(self, app: str, repo: str, heads: dict[str, str]) -> None:
        self.apps[app] = {"repo": repo, "heads": heads}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"version": STATE_VERSION, "apps": self.apps}, indent=1, sort_keys=True)
        )
        os.replace(temporary, self.path)


class GitPoller:
    def __init__(
        self,
        specs: SpecDirectory,
        client: Callable[[], Awaitable[Client]],
        state_file: Path,
        *,
        queue: str | None = None,
        metrics: Metrics | None = None,
        index_search_attributes: bool = True,
    ) -> None:
        self.specs = specs
        self.client = client
        self.state = PollState(state_file)
        self.queue = queue
        self.metrics = metrics
        self.index_search_attributes = index_search_attributes

    async def poll_once(self) -> list[PollResult]:
        """Poll every spec now."""
        await asyncio.to_thread(self.specs.reload)
        results: list[PollResult] = []
        for loaded in self.specs.specs:
            results.extend(await self.poll_app(loaded))
        return results

    async def poll_app(self, loaded: LoadedSpec) -> list[PollResult]:
        spec = loaded.spec
        repo = loaded.repo or spec.source_repo
        try:
            heads = await list_heads(spec.source_repo)
        except (SourceError, OSError) as error:
            log.warning("poll of %s: %s", spec.name, error)
            return []
        known = self.state.heads(spec.name, repo)
        if known is None:
            log.info(
                "poll of %s: baseline of %d heads recorded; new heads from now on start deliveries",
                spec.name,
                len(heads),
            )
            self.state.save(spec.name, repo, heads)
            return []
        results = []
        recorded = {branch: sha for branch, sha in known.items() if branch in heads}
        for branch, sha in sorted(heads.items()):
            if known.get(branch) == sha:
                continue
            if not branch_matches(branch, spec.branches):
                recorded[branch] = sha  # remembered so a later glob change does not deliver old heads
                continue
            if problem := _head_problem(branch, sha):
                log.warning("poll of %s: skipping head %r: %s", spec.name, branch, problem)
                if self.metrics is not None:
                    self.metrics.inc("aicd_poller_refs_refused_total")
                recorded[branch] = sha  # remembered, so it is reported once, not every poll
                continue
            result = await self._start(loaded, branch, sha, known.get(branch))
            results.append(result)
            if not result.outcome.startswith("error"):
                recorded[branch] = sha
            self.state.save(spec.name, repo, recorded)
        self.state.save(spec.name, repo, recorded)
        return results

    async def _start(self, loaded: LoadedSpec, branch: str, sha: str, before: str | None) -> PollResult:
        app = loaded.spec.name
        try:
            plan = build_plan(loaded.spec, sha)
            detail = f"{before[:7]}..{sha[:7]}" if before else f"new branch at {sha[:7]}"
            event = f"push:{branch}:{before or ''}:{sha}"  # the same identity a webhook gives this push
            client = await self.client()
            # A webhook may have delivered this head already, having seen a head in between that this poll
            # missed (its `before` differs): the same push, not a second one.
            earlier = await earlier_push_delivery(client, app, branch, sha, before or "", event)
            if earlier is not None:
                log.info(
                    "poll of %s: new head %s of %r: already delivered by %s", app, sha[:12], branch, earlier
                )
                if self.metrics is not None:
                    self.metrics.inc("aicd_deliveries_already_started_total", source="poller")
                return PollResult(app, branch, sha, "already started", earlier)
            started = await start_delivery(
                client,
                plan,
                Trigger("poller", actor="poller", branch=branch, detail=detail, event=event),
                queue=self.queue,
                index_search_attributes=self.index_search_attributes,
            )
        except Exception as error:  # Temporal down, bad head: try again next poll
            log.error("poll of %s: cannot start a delivery of %s (%r): %s", app, sha[:12], branch, error)
            return PollResult(app, branch, sha, f"error: {error}")
        outcome = "started" if started.started else "already started"
        if self.metrics is not None:
            name = (
                "aicd_gateway_deliveries_started_total"
                if started.started
                else "aicd_deliveries_already_started_total"
            )
            self.metrics.inc(name, source="poller")
        log.info("poll of %s: new head %s of %r: %s %s", app, sha[:12], branch, started.delivery_id, outcome)
        return PollResult(app, branch, sha, outcome, started.delivery_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll each spec every its pollInterval until `stop` is set."""
        due: dict[str, float] = {}
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.specs.reload)
                now = time.monotonic()
                ready = [loaded for loaded in self.specs.specs if due.get(loaded.spec.name, 0.0) <= now]
                for loaded in ready:
                    due[loaded.spec.name] = now + loaded.spec.poll_interval_s
                await asyncio.gather(*(self.poll_app(loaded) for loaded in ready))
            except Exception:  # one bad round must not end polling
                log.exception("poll round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
