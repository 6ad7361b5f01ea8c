"""Per-site health of an edge fleet, many sites per activity call.

`edge_check_sites` takes one chunk of a batch (a few hundred sites) that the batch's single commit moved,
and says which sites failed and why; the fleet workflow runs a sliding window of these chunks. Checking a
chunk per call instead of a site per call keeps a 10,000-site fleet at a few dozen activities and a few
hundred history events.

How a site is checked, by the target's `siteKind`:
- `git` (default): the site's agent applies its file from Git itself. The batch is one commit, so "the
  commit landed on the branch" is checked once per chunk through the `git` target driver, not per site.
- `argocd`: each site is an Argo CD Application (as an ApplicationSet names them: the target's `app`
  template rendered with `{{ site }}`), synced and awaited through the `argocd` target driver, at most
  `parallelism` sites at once.
Then, for either kind, a site that lists a `health` URL in the fleet file must answer 2xx on it within the
target's progress deadline (polled; its last answer is the failure reason).

Failures of single sites are data (returned by name), never an activity failure: the fleet workflow weighs
them against `maxFailures`. Trouble that is not a site's (the Kubernetes API down) raises and the whole
chunk is retried, which is safe: every check is a read or an idempotent sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from aicd.activities.drivers import driver_for
from aicd.activities.drivers.base import SyncFailed, SyncRequest
from aicd.activities.gitops import GitOpsActivities
from aicd.errors import ErrorType
from aicd.fleet import FleetSlice, Site, site_path, site_variables
from aicd.spec.placeholders import render
from aicd.targets import ArgoCDTarget, EdgeTarget, GitTarget, TargetKind

SITE_KINDS = ("git", "argocd")
HEARTBEAT_EVERY_S = 2.0
HTTP_TIMEOUT_S = 5.0
REASON_CHARS = 300  # a failure reason is kept short: it travels in history and status


@dataclass
class SiteHealthRequest:
    delivery_id: str
    stage: str
    target: str
    site_kind: str  # git | argocd
    gitops_repo: str
    gitops_branch: str
    revision: str  # the batch's commit
    step: str  # "<stage>/<target>/batch-<n>"
    sites: list[Site]  # empty when `fleet_sites` names them
    parallelism: int = 50
    timeout_s: float = 600.0  # progress deadline of one site
    settings: EdgeTarget | None = None  # the fleet's typed config, without its sites; read it through fleet()
    path: str = ""  # the site file template, with {{ site }}
    # Requests scheduled before `settings` carried the target's spec fields as written.
    config: dict[str, Any] = field(default_factory=dict)
    # The chunk as a slice of the fleet file (its names and health URLs stay out of workflow history).
    fleet_sites: FleetSlice | None = None

    def fleet(self) -> EdgeTarget:
        return self.settings if self.settings is not None else EdgeTarget.parse(self.config)

    def file(self) -> str:
        return self.path or str(self.config.get("path", ""))


@dataclass
class SiteHealthResult:
    checked: int
    failed: dict[str, str] = field(default_factory=dict)  # site -> why, only the failed ones


def site_target(fleet: EdgeTarget, site: str, stage: str, target: str) -> ArgoCDTarget:
    """The site's Argo CD Application, as the `argocd` driver takes it: the fleet's `app` rendered for it."""
    if not fleet.app:
        raise ApplicationError(
            f"{target}: siteKind argocd needs `app` (a template with {{{{ site }}}})",
            non_retryable=True,
            type=ErrorType.FLEET_CONFIG_ERROR,
        )
    app = render(fleet.app, site_variables(site, stage, target), partial=True)
    return ArgoCDTarget(
        app=app, namespace=fleet.namespace, context=fleet.context, kubeconfig=fleet.kubeconfig
    )


class EdgeActivities:
    def __init__(self, gitops: GitOpsActivities) -> None:
        self.gitops = gitops  # reads a chunk's sites from the fleet file

    @activity.defn(name="edge_check_sites")
    async def check_sites(self, request: SiteHealthRequest) -> SiteHealthResult:
        if request.fleet_sites is not None:
            part = request.fleet_sites
            sites = await asyncio.to_thread(
                self.gitops.fleet_sites, request.gitops_repo, request.gitops_branch, part
            )
            request = dataclasses.replace(request, sites=sites, fleet_sites=None)
        return await check_sites(request)


async def check_sites(request: SiteHealthRequest) -> SiteHealthResult:
    if request.site_kind not in SITE_KINDS:
        raise ApplicationError(
            f"{request.target}: unknown siteKind {request.site_kind!r}; one of {SITE_KINDS}",
            non_retryable=True,
            type=ErrorType.FLEET_CONFIG_ERROR,
        )
    progress = {"checked": 0}
    beating = asyncio.ensure_future(_heartbeat_until_done(request, progress))
    try:
        failed = await _check(request, progress)
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
    return SiteHealthResult(len(request.sites), failed)


async def _check(request: SiteHealthRequest, progress: dict[str, int]) -> dict[str, str]:
    failed: dict[str, str] = {}
    if request.site_kind == "git":
        landed = await _sync_reason(request, request.target, GitTarget(), request.file())
        if landed is not None:  # the batch's commit is not on the branch: no site of it can run it
            return {site.name: landed for site in request.sites}
        progress["checked"] = sum(1 for site in request.sites if not site.health)
    to_check = [site for site in request.sites if request.site_kind != "git" or site.health]
    if not to_check:
        return failed
    limit = asyncio.Semaphore(max(1, request.parallelism))
    async with httpx.AsyncClient(
        timeout=min(HTTP_TIMEOUT_S, request.timeout_s), follow_redirects=True
    ) as http:

        async def one(site: Site) -> None:
            async with limit:
                reason = await _site_reason(request, site, http)
            if reason is not None:
                failed[site.name] = reason[:REASON_CHARS]
            progress["checked"] += 1

        await asyncio.gather(*(one(site) for site in to_check))
    # In fleet order, whatever order the checks finished in: reasons and statuses read predictably.
    return {site.name: failed[site.name] for site in request.sites if site.name in failed}


async def _site_reason(request: SiteHealthRequest, site: Site, http: httpx.AsyncClient) -> str | None:
    if request.site_kind == "argocd":
        try:
            application = site_target(request.fleet(), site.name, request.stage, request.target)
        except ApplicationError as error:
            return str(error)
        path = site_path(request.file(), site.name) if request.file() else ""
        reason = await _sync_reason(request, f"{request.target}/{site.name}", application, path)
        if reason is not None:
            return reason
    if site.health:
        return await _probe(http, site.health, request.timeout_s)
    return None


async def _sync_reason(request: SiteHealthRequest, name: str, settings: TargetKind, path: str) -> str | None:
    """None when the driver reports the commit running and healthy, else why not. A configuration error of
    one site (its Application missing) fails that site; transient trouble raises and the chunk is retried."""
    sync = SyncRequest(
        delivery_id=request.delivery_id,
        stage=request.stage,
        target=name,
        kind=settings.name,
        settings=settings,
        path=path,
        gitops_repo=request.gitops_repo,
        gitops_branch=request.gitops_branch,
        revision=request.revision,
        step=request.step,
        timeout_s=request.timeout_s,
    )
    try:
        # The chunk heartbeats for all its sites; per-site heartbeats would only be noise.
        await driver_for(settings.name).sync(sync, _no_heartbeat)
    except SyncFailed as error:
        return str(error)
    except ApplicationError as error:
        if error.non_retryable:
            return error.message
        raise
    return None


async def _probe(http: httpx.AsyncClient, url: str, deadline_s: float) -> str | None:
    """Poll `url` until it answers 2xx (healthy: None) or the deadline passes (the last answer is why)."""
    deadline = time.monotonic() + deadline_s
    interval = min(2.0, max(0.1, deadline_s / 10))
    last = "no answer"
    while True:
        try:
            response = await http.get(url)
            if 200 <= response.status_code < 300:
                return None
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            last = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if time.monotonic() + interval > deadline:
            return f"health {url} not 2xx within {deadline_s:g}s (last: {last})"
        await asyncio.sleep(interval)


async def _heartbeat_until_done(request: SiteHealthRequest, progress: dict[str, int]) -> None:
    """Heartbeats carry progress and, above all, let a cancelled fleet (abort) stop this chunk at once."""
    while True:
        if activity.in_activity():
            activity.heartbeat(f"{progress['checked']}/{len(request.sites)} sites checked")
        await asyncio.sleep(HEARTBEAT_EVERY_S)


def _no_heartbeat(*_details: Any) -> None:
    return None
