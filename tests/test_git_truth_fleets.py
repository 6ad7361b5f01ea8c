"""Git never lies about an edge fleet, whatever the order: seeded random interleavings of releases of one app
(or two sharing the GitOps repository) whose target is an edge fleet of 6-12 sites (a fleet file, batches, steps
with short pauses and `pause: {}`), with newer releases superseding or queueing behind older ones, pauses,
resumes, aborts, people's commits to site files (a site's image pinned back to an earlier release, another key
edited), force-pushes back over the last 1-3 commits and, in some seeds, sites whose health URL (served on
loopback) answers 503 for a while. Real Temporal, real Git, as tests/test_git_truth_interleavings.py, whose
harness (World) this one extends. At the end it resumes whatever waits for a human, then reads the GitOps branch
and every delivery's final status and checks what must hold in any order:

- every delivery ends;
- every commit a delivery reports is on the branch (or was dropped by a person's force-push), every commit of
  a delivery on the branch is one it reports, the status names exactly the reported commits the branch no
  longer holds, and a delivery writes only its own fleet's site files;
- once a newer delivery of the app has written a site file, an older one never writes it again;
- a rollback or a batch's restore puts a site file back byte for byte as it was before the delivery, with a
  person's edit of another key made since kept;
- each site file runs the release of the last delivery that says it promoted the site (its fleet promoted, the
  site not among its failed ones), or a person's pin after it, or the seed's: never a release a delivery says
  it rolled back, aborted, superseded, failed or never finished (a force-push that has the last word on a file
  excepted, and a delivery's undo that a force-push dropped);
- a fleet's per-site counts agree with Git: promoted, its updated sites run the release and its failed ones
  do not (where it wrote them last); rolled back, the sites its rollback commit left on someone else's write
  are the `left-as-is` ones, the others `rolled-back` and off the release; pending are the sites no batch
  reached;
- the status names, for each site file whose content on the branch is no longer what the delivery's last
  write of that file left there, the commit that changed it (and names none when there is none).

`python -m tests.test_git_truth_fleets FIRST LAST` runs seeds FIRST..LAST, a line per seed."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd import fleet as fleet_math
from aicd.client import get_status, handle_for, read_branch_since
from aicd.dashboard.gitops import GitOpsReader
from aicd.messages import TERMINAL_PHASES, DeliveryStatus, TargetStatus
from aicd.testing.engine import git, make_repo, start_dev_server, temporal_env
from tests.test_edge_fleet import PATH, SITE_VALUES, HealthServer, changed_files, names
from tests.test_git_truth_interleavings import (
    World,
    image_set_by,
    is_ancestor,
    replay_failures,
    rewind_has_the_last_word,
    writes,
)

__all__ = ["temporal_env"]

TARGET = "pops"
STAGE = "edge"
# Each seed's fleets: (key in the app's name, fleet file). The second one only in seeds with two apps.
FLEETS = (("web", "fleets/edge.yaml"), ("api", "fleets/edge-api.yaml"))
BATCHES = (["25%", "50%", "100%"], ["1%", "50%", "100%"], ["50%", "100%"], ["10%", "40%", "70%", "100%"])
# The stage's steps after every batch (setWeight is skipped by a fleet: its batches are its canary).
STEPS: tuple[list[dict[str, Any]], ...] = (
    [{"pause": "1s"}],
    [{"pause": {}}],
    [{"setWeight": 50}, {"pause": "1s"}],
    [{"pause": "1s"}, {"pause": {}}],
    [],
)
MAX_FAILURES: tuple[int | str, ...] = (0, 1, "25%")
UNDO = ("/rollback", "-restore")  # the steps that put site files back to before the delivery
FINAL_STATES = ("promoted", "failed", "aborted", "superseded", "rolled-back")


@dataclass(frozen=True)
class Fleet:
    key: str  # the app is `<prefix>-<key>`
    fleet_file: str
    sites: tuple[str, ...]
    batches: tuple[str, ...]

    @property
    def template(self) -> str:
        return PATH.replace("/web/", f"/{self.key}/")

    def file(self, site: str) -> str:
        return fleet_math.site_path(self.template, site)

    def files(self) -> dict[str, str]:
        return {self.file(site): site for site in self.sites}


@dataclass
class FleetWorld(World):
    """The interleaving harness's world, its targets edge fleets: what people do to them, and what they see."""

    fleets: dict[str, Fleet] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    max_failures: int | str = 0
    health: HealthServer | None = None
    pins: int = 0  # people's commits that set a site's image tag
    edits: int = 0  # people's commits that set another key of a site file
    health_flips: int = 0
    statuses: dict[str, DeliveryStatus] = field(default_factory=dict)  # each delivery's final status

    def setup(self) -> None:
        files: dict[str, str] = {}
        for fleet in self.fleets.values():
            if self.health is not None:
                url = self.health.url
                entries = [f"- {{name: {site}, health: '{url}/healthz/{site}'}}\n" for site in fleet.sites]
            else:
                entries = [f"- {site}\n" for site in fleet.sites]
            files[fleet.fleet_file] = "# the edge PoPs\n" + "".join(entries)
            files.update({path: SITE_VALUES.format(site=site) for path, site in fleet.files().items()})
        self.source, _ = make_repo(self.root, "source", {"README": "r0\n"})
        self.gitops, _ = make_repo(self.root, "gitops", files)
        git("clone", "-q", self.gitops, str(self.root / "human"))

    def document(self, app: str) -> dict[str, Any]:
        fleet = self.fleets[app]
        edge: dict[str, Any] = {
            "kind": "edge",
            "sites": {"file": fleet.fleet_file},
            "path": fleet.template,
            "batches": list(fleet.batches),
            "maxFailures": self.max_failures,
            "progressDeadline": "1s",
        }
        stage: dict[str, Any] = {"name": STAGE, "targets": [TARGET]}
        if self.steps:
            stage["strategy"] = {"canary": {"steps": self.steps}}
        return {
            "apiVersion": "aicd.dev/v1alpha1",
            "kind": "DeliverySpec",
            "metadata": {"name": f"{self.app_prefix}-{app}"},
            "spec": {
                "source": {"repo": self.source, "branches": ["release/*"]},
                "gitops": {"repo": self.gitops, "branch": "main"},
                "targets": {TARGET: edge},
                "stages": [stage],
                "concurrency": self.concurrency,
                "rollback": {"scope": self.rollback_scope},
            },
        }

    async def release(self) -> None:
        app = self.rng.choice(sorted(self.fleets)) if self.rng.random() < 0.4 else "web"
        revision = await asyncio.to_thread(self.new_revision, False)
        self.released.append((app, revision))
        await self.deliver(app, revision, "release")

    async def ended_tags(self, app: str) -> list[str]:
        """The releases of the app whose deliveries have ended: what a person pins a site back to."""
        ended = []
        for plan in self.plans:
            if self.app_of[plan.delivery_id] == app:
                status = await get_status(self.client, plan.delivery_id)
                if status.phase in TERMINAL_PHASES:
                    ended.append(plan.artifact_tag)
        return ended

    async def site_commit(self) -> None:
        """On-call edits one site's file by hand: pins its image back to an earlier release (v0 or a release
        whose delivery has ended), or sets another key (its region)."""
        app = self.rng.choice(sorted(self.fleets))
        site = self.rng.choice(self.fleets[app].sites)
        pin = self.rng.random() < 0.55
        tag = self.rng.choice(["v0", *await self.ended_tags(app)]) if pin else ""
        await asyncio.to_thread(self._site_commit, app, site, tag)

    def _site_commit(self, app: str, site: str, tag: str) -> None:
        work = self.root / "human"
        git("fetch", "-q", "origin", cwd=work)
        git("reset", "-q", "--hard", "origin/main", cwd=work)
        path = self.fleets[app].file(site)
        text = (work / path).read_text()
        if tag:
            changed = re.sub(r"^(  tag: ).*$", rf"\g<1>{tag}", text, count=1, flags=re.M)
            what = f"pin {app}/{site} to {tag}"
        else:
            changed = re.sub(r"^(region: .*)$", rf"\g<1>-{self.edits + 1}", text, count=1, flags=re.M)
            what = f"set the region of {app}/{site}"
        if changed == text:
            self.log.append(f"human: {what} (nothing to change)")
            return
        (work / path).write_text(changed)
        alice = ("-c", "user.name=Alice", "-c", "user.email=alice@x")
        git(*alice, "commit", "-qam", what, cwd=work)
        try:
            git("push", "-q", "origin", "HEAD:main", cwd=work)
        except subprocess.CalledProcessError:  # a delivery pushed in between: drop the edit
            git("fetch", "-q", "origin", cwd=work)
            git("reset", "-q", "--hard", "origin/main", cwd=work)
            self.log.append(f"human: {what} (lost a push race, dropped)")
            return
        self.human_commits += 1
        if tag:
            self.pins += 1
        else:
            self.edits += 1
        self.log.append(f"human: {what} ({git('rev-parse', 'HEAD', cwd=work)[:7]})")

    def flip_health(self) -> None:
        """A site's health endpoint starts answering 503 (at most two at once), or recovers."""
        if self.health is None:
            return
        site = self.rng.choice(sorted({site for fleet in self.fleets.values() for site in fleet.sites}))
        if site in self.health.broken:
            self.health.broken.discard(site)
            self.log.append(f"health: {site} recovers")
        elif len(self.health.broken) < 2:
            self.health.broken.add(site)
            self.log.append(f"health: {site} answers 503")
        else:
            return
        self.health_flips += 1

    async def act(self, actions: int) -> None:
        await self.release()
        for _ in range(actions):
            await asyncio.sleep(self.rng.uniform(0.2, 1.5))
            choice = self.rng.random()
            if choice < 0.22:
                await self.release()
            elif choice < 0.36:
                await self.steer("pause")
            elif choice < 0.58:
                await self.steer("resume")
            elif choice < 0.66:
                await self.steer("abort")
            elif choice < 0.8:
                await self.site_commit()
            elif choice < 0.9:
                await asyncio.to_thread(self.human_rewind)
            else:
                self.flip_health()


# --- reading Git -------------------------------------------------------------------------------------------
def trailers(gitops: str, shas: list[str]) -> dict[str, tuple[str, str]]:
    """(delivery ID, step) of each commit ('' for a person's), on the branch or not (a force-push leaves the
    objects in the bare repository)."""
    if not shas:
        return {}
    out = git(
        "--git-dir",
        gitops,
        "log",
        "--no-walk=unsorted",
        "--format=@%H|%(trailers:key=Aicd-Delivery-Id,valueonly,separator=)|%(trailers:key=Aicd-Step,valueonly,separator=)",
        *shas,
    )
    found = {}
    for line in out.splitlines():
        if line.startswith("@"):
            sha, delivery, step = line[1:].split("|")
            found[sha] = (delivery.strip(), step.strip())
    return found


def last_change(gitops: str, rev: str, path: str) -> tuple[str, str]:
    """The commit that gave `path` its content at `rev`, and the delivery that made it ('' for a person's)."""
    trailer = "%(trailers:key=Aicd-Delivery-Id,valueonly,separator=)"
    sha, _, delivery = git(
        "--git-dir", gitops, "log", "-1", f"--format=%H {trailer}", rev, "--", path
    ).partition(" ")
    return sha.strip(), delivery.strip()


def text_at(gitops: str, rev: str, path: str) -> str:
    return git("--git-dir", gitops, "show", f"{rev}:{path}")


def tag_at(gitops: str, rev: str, path: str) -> str:
    return str(yaml.safe_load(text_at(gitops, rev, path))["image"]["tag"])


def same_file(gitops: str, old: str, new: str, path: str) -> bool:
    ran = subprocess.run(["git", "--git-dir", gitops, "diff", "--quiet", old, new, "--", path], check=False)
    return ran.returncode == 0


def region_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("region:"))


def batch_number(step: str) -> int | None:
    """N of a batch's own step (`edge/pops/batch-N`), None for its restore and for other steps."""
    match = re.fullmatch(r"[^/]+/[^/]+/batch-(\d+)", step)
    return int(match.group(1)) if match else None


def says_promoted_site(status: DeliveryStatus, site: str) -> bool:
    """Whether the delivery says the site runs its release: its fleet promoted, the site not among those that
    failed (a failed site went back to its previous version)."""
    target = status.targets.get(TARGET)
    return target is not None and target.state == "promoted" and site not in target.failed_sites


# --- the invariants ----------------------------------------------------------------------------------------
def undo_violations(world: FleetWorld, path: str, history: list[tuple[str, str, str]]) -> list[str]:
    """A delivery's rollback or a batch's restore puts the site file back byte for byte as it was before the
    delivery's first write of it, with a person's edit of the region since (their value, not the delivery's)
    kept; and leaves a file whose image a person pinned since."""
    found = []
    for sha, delivery, step in history:
        if not delivery or not step.endswith(UNDO):
            continue
        since = writes_at(world.gitops, sha, path)
        own = [s for s, d, _ in since if d == delivery]
        # A person who pinned the image since its last write took the file over: an undo leaves it as it is.
        pins = [
            s
            for s, d, _ in since
            if len(own) > 1
            and not d
            and is_ancestor(world.gitops, own[-2], s)
            and image_set_by(world.gitops, s, path)
        ]
        if pins:
            found.append(
                f"{path}: {step} {sha[:7]} of {delivery[-8:]} undid the pin {pins[-1][:7]} of a person"
            )
        before = text_at(world.gitops, f"{own[0]}~1", path)
        expected = before.replace(region_line(before), region_line(text_at(world.gitops, f"{sha}~1", path)))
        after = text_at(world.gitops, sha, path)
        if after != expected:
            found.append(
                f"{path}: {step} {sha[:7]} of {delivery[-8:]} wrote {after!r}, where the file before the"
                f" delivery ({own[0][:7]}~1, with the region kept) is {expected!r}"
            )
    return found


def writes_at(gitops: str, rev: str, path: str) -> list[tuple[str, str, str]]:
    """(commit, delivery ID, step) of each commit that changed `path` in `rev`'s history, oldest first."""
    shas = git("--git-dir", gitops, "log", "--reverse", "--format=%H", rev, "--", path).split()
    known = trailers(gitops, shas)
    return [(sha, *known.get(sha, ("", ""))) for sha in shas]


def file_violations(
    world: FleetWorld, statuses: dict[str, DeliveryStatus], dropped_undos: dict[str, set[str]]
) -> list[str]:
    found: list[str] = []
    order = [plan.delivery_id for plan in world.plans]
    tags = {plan.delivery_id: plan.artifact_tag for plan in world.plans}
    for app, fleet in world.fleets.items():
        for site in fleet.sites:
            path = fleet.file(site)
            history = writes(world.gitops, path)
            strangers = {d for _, d, _ in history if d and world.app_of.get(d) != app}
            if strangers:
                found.append(
                    f"{path}: written by deliveries of another app: {sorted(d[-8:] for d in strangers)}"
                )
                continue
            by_delivery = [d for _, d, _ in history if d]
            for index, older in enumerate(by_delivery):
                newer = [d for d in by_delivery[:index] if order.index(d) > order.index(older)]
                if newer:
                    found.append(f"{path}: {older[-8:]} wrote after the newer {newer[-1][-8:]}")
                    break
            found += undo_violations(world, path, history)
            text = text_at(world.gitops, "main", path)
            if "# keep me" not in text or f"# edge values for {site}" not in text:
                found.append(f"{path}: lost its comments: {text!r}")
            if rewind_has_the_last_word(world, path, history):
                continue  # it runs what on-call forced the branch back to: no delivery wrote it since
            # What should run: the release of the last delivery that says the site runs it (or whose undo of
            # it a person's force-push dropped), a person's pin after it, else the seed's.
            # A delivery's undo puts back what ran before its first write of the file.
            last, expected = "none", "v0"
            before: dict[str, tuple[str, str]] = {}
            for sha, delivery, step in history:
                if delivery:
                    before.setdefault(delivery, (last, expected))
                    if step.endswith(UNDO):
                        last, expected = before[delivery]
                    elif batch_number(step) is not None and (
                        says_promoted_site(statuses[delivery], site) or path in dropped_undos[delivery]
                    ):
                        last, expected = delivery[-8:], tags[delivery]
                elif (pinned := image_set_by(world.gitops, sha, path)) is not None:
                    last, expected = f"a person ({sha[:7]})", pinned
            runs = tag_at(world.gitops, "main", path)
            if runs != expected:
                owner = next((d for d, tag in tags.items() if tag == runs), None)
                said = statuses[owner].targets.get(TARGET) if owner else None
                what = (
                    f"{owner[-8:]} ends {statuses[owner].phase}, its fleet {said.state if said else 'never started'}"
                    f"{' (failed here)' if said and site in said.failed_sites else ''}"
                    if owner
                    else "no delivery's"
                )
                found.append(
                    f"{path}: runs {runs} ({what}), where the last to say it runs there is"
                    f" {last} ({expected})"
                )
    return found


def site_state_violations(
    world: FleetWorld, fleet: Fleet, delivery: str, tag: str, target: TargetStatus, branch: set[str]
) -> list[str]:
    """The fleet's per-site counts against Git, at the delivery's last commit (promoted) or at its rollback."""
    found: list[str] = []
    total = len(fleet.sites)
    counts = dict(target.sites_by_state)
    name = f"{delivery[-8:]} ({target.state})"
    if target.state not in FINAL_STATES:
        return [f"{name}: its fleet ended {target.state}"]
    if not counts and not target.commits:
        return found  # it never read the fleet: nothing moved
    if target.sites_total != total or sum(counts.values()) != total:
        found.append(f"{name}: counts {counts} over {target.sites_total} sites, where the fleet has {total}")
    failed = set(target.failed_sites)
    if not failed <= set(fleet.sites):
        found.append(f"{name}: failed sites {sorted(failed)} are not the fleet's")
    known = trailers(world.gitops, target.commits)
    numbers = [n for sha in target.commits if (n := batch_number(known.get(sha, ("", ""))[1])) is not None]
    ends = fleet_math.batch_ends(total, list(fleet.batches))
    moved = ends[max(numbers) - 1] if numbers else 0
    if target.state == "promoted":
        expected = {"updated": total - len(failed), "failed": len(failed)}
        if counts != {state: count for state, count in expected.items() if count}:
            found.append(f"{name}: counts {counts}, where a promoted fleet has {expected}")
        if not set(target.commits) <= branch:
            # A person's force-push dropped some of its writes (its status says which): a batch dropped before its
            # failed sites' restore leaves nothing to restore, and its last commit no longer tells what ran.
            return found
        last = target.commits[-1]
        for site in fleet.sites:
            path = fleet.file(site)
            _, writer = last_change(world.gitops, last, path)
            if writer != delivery:
                continue  # someone else's since its write: the status names it (changed_since)
            runs = tag_at(world.gitops, last, path)
            if (runs == tag) == (site in failed):
                found.append(
                    f"{name}: {site} runs {runs} at its last commit {last[:7]}, where the status says it"
                    f" {'failed' if site in failed else 'was updated'}"
                )
        return found
    if "updated" in counts or "updating" in counts:
        if "rollback commit failed" not in target.message:
            found.append(f"{name}: counts {counts} say sites are on the release it ended without")
        return found
    if counts.get("pending", 0) != total - moved or counts.get("failed", 0) != len(failed):
        found.append(f"{name}: counts {counts}, where its batches moved {moved} of {total} sites")
    undos = [sha for sha in target.commits if known.get(sha, ("", ""))[1].endswith("/rollback")]
    if not undos:
        return found
    rollback = undos[-1]
    batches = [sha for sha in target.commits if batch_number(known.get(sha, ("", ""))[1]) is not None]
    if not all(is_ancestor(world.gitops, sha, rollback) for sha in batches):
        return found  # a person's force-push dropped one of its batches before the rollback: not counted here
    left = []
    for site in fleet.sites[:moved]:
        if site in failed:
            continue
        path = fleet.file(site)
        _, writer = last_change(world.gitops, rollback, path)
        if writer != delivery:
            left.append(site)
        elif tag_at(world.gitops, rollback, path) == tag:
            found.append(f"{name}: {site} is on the release at its rollback {rollback[:7]}")
    expected = {
        "rolled-back": moved - len(failed) - len(left),
        "left-as-is": len(left),
        "failed": len(failed),
        "pending": total - moved,
    }
    if counts != {state: count for state, count in expected.items() if count}:
        found.append(
            f"{name}: counts {counts}, where Git at its rollback {rollback[:7]} says {expected}"
            f" (left to others: {left})"
        )
    return found


def later_site_writers(world: FleetWorld, fleet: Fleet, delivery: str, commits: list[str]) -> set[str]:
    """The commits whose content of a site file runs now where the delivery's last write of that file is not
    what runs (and not the delivery's own); none when the branch no longer holds the delivery's last commit
    (off_branch says so)."""
    if not commits or not is_ancestor(world.gitops, commits[-1], "main"):
        return set()
    held = [sha for sha in commits if is_ancestor(world.gitops, sha, "main")]
    written = {path: sha for sha in held for path in changed_files(world.gitops, sha)}
    later = set()
    for path, last in written.items():
        # A file its rollback left to whoever wrote it since is named too: what runs is theirs.
        if path not in fleet.files() or same_file(world.gitops, last, "main", path):
            continue
        changed, writer = last_change(world.gitops, "main", path)
        if writer != delivery:
            later.add(changed)
    return later


def delivery_violations(
    world: FleetWorld, statuses: dict[str, DeliveryStatus]
) -> tuple[list[str], dict[str, set[str]]]:
    """Each delivery's commits and status against the branch; and the site files whose undo by a delivery a
    person's force-push dropped (by delivery)."""
    found: list[str] = []
    tags = {plan.delivery_id: plan.artifact_tag for plan in world.plans}
    branch = set(git("--git-dir", world.gitops, "rev-list", "main").split())
    rewound = {sha for rewind in world.rewinds for sha in rewind.dropped} - branch
    on_branch: dict[str, set[str]] = {}
    for sha, (delivery, _) in trailers(world.gitops, sorted(branch)).items():
        if delivery:
            on_branch.setdefault(delivery, set()).add(sha)
    strangers = set(on_branch) - set(statuses)
    if strangers:
        found.append(f"commits of deliveries the harness never started: {sorted(strangers)}")
    dropped_undos: dict[str, set[str]] = {}
    for delivery, status in statuses.items():
        fleet = world.fleets[world.app_of[delivery]]
        reported = status.commits()
        dropped = set(reported) - branch
        if set(status.off_branch) != dropped:
            found.append(
                f"{delivery[-8:]}: its status says {sorted(status.off_branch)} are no longer on the branch,"
                f" where Git says {sorted(dropped)}"
            )
        if missing := dropped - rewound:
            found.append(
                f"{delivery[-8:]}: reports commits no one dropped that are not on the branch: {missing}"
            )
        if unreported := on_branch.get(delivery, set()) - set(reported):
            found.append(f"{delivery[-8:]}: does not report its commits {sorted(unreported)}")
        if len(set(reported)) != len(reported):
            found.append(f"{delivery[-8:]}: reports a commit twice: {reported}")
        known = trailers(world.gitops, reported)
        dropped_undos[delivery] = set()
        for sha in reported:
            files = set(changed_files(world.gitops, sha))
            if not files <= set(fleet.files()):
                found.append(f"{delivery[-8:]}: {sha[:7]} writes {sorted(files - set(fleet.files()))}")
            if sha in dropped and known.get(sha, ("", ""))[1].endswith(UNDO):
                dropped_undos[delivery] |= files
        target = status.targets.get(TARGET)
        if target is None:
            continue
        found += site_state_violations(world, fleet, delivery, tags[delivery], target, branch)
        expected = later_site_writers(world, fleet, delivery, target.commits)
        shown = {commit.sha for commit in status.changed_since.get(TARGET, [])}
        if not shown <= expected or bool(shown) != bool(expected):
            found.append(
                f"{delivery[-8:]}: its status names {sorted(s[:7] for s in shown)} as changing its site files"
                f" since it wrote them, where Git says {sorted(s[:7] for s in expected)}"
            )
    return found, dropped_undos


def violations(world: FleetWorld, statuses: dict[str, DeliveryStatus]) -> list[str]:
    found, dropped_undos = delivery_violations(world, statuses)
    return found + file_violations(world, statuses, dropped_undos)


# --- one seed ----------------------------------------------------------------------------------------------
def fleet_world(client: Client, root: Path, seed: int) -> FleetWorld:
    rng = random.Random(seed)
    queue = f"fleet-{uuid.uuid4().hex[:10]}"
    concurrency = "queue" if seed % 4 == 3 else "supersede"
    scope = ("stage", "release", "target")[seed % 3]
    world = FleetWorld(root, client, queue, concurrency, scope, "fleet", rng, f"fl-{seed}-{queue[-6:]}")
    world.rewind_rng = random.Random(f"rewinds-{seed}")
    apps = FLEETS if rng.random() < 0.4 else FLEETS[:1]
    for key, fleet_file in apps:
        sites = tuple(names(rng.randint(6, 12)))
        world.fleets[key] = Fleet(key, fleet_file, sites, tuple(rng.choice(BATCHES)))
    world.steps = list(rng.choice(STEPS))
    world.max_failures = rng.choice(MAX_FAILURES)
    return world


async def run_fleet_interleaving(
    client: Client, root: Path, seed: int, actions: int = 14, keep: Path | None = None
) -> tuple[list[str], FleetWorld]:
    world = fleet_world(client, root, seed)
    with contextlib.ExitStack() as stack:
        if world.rng.random() < 0.6:  # the sites list health URLs, served here
            world.health = stack.enter_context(HealthServer().running())
        world.log.append(
            f"seed {seed}: {world.concurrency}, rollback {world.rollback_scope}, steps {world.steps},"
            f" maxFailures {world.max_failures}, health {'on' if world.health else 'off'}, fleets "
            + ", ".join(f"{f.key} {len(f.sites)} sites {list(f.batches)}" for f in world.fleets.values())
        )
        world.setup()
        await world.start_worker()
        try:
            await world.act(actions)
            try:
                statuses = await world.settle()
                for plan in world.plans:
                    await handle_for(client, plan.delivery_id).result()
            except Exception as error:  # a delivery that cannot go on: is its history still the code's?
                unreplayable = await replay_failures(client, world.plans, keep or root, world.bug)
                raise AssertionError(
                    "\n".join([f"{type(error).__name__}: {error}", *unreplayable])
                ) from error
            statuses = {plan.delivery_id: await get_status(client, plan.delivery_id) for plan in world.plans}
            world.statuses = statuses
            world.phases = [statuses[plan.delivery_id].phase for plan in world.plans]
            reader = GitOpsReader(cache=world.root / "mirrors")  # what `aicd status` and the dashboard read
            for status in statuses.values():
                await read_branch_since(client, status, reader)
                world.marked_off_branch += len(status.off_branch)
                world.marked_changed += len(status.changed_since)
            unreplayable = await replay_failures(client, world.plans, keep or root, world.bug)
        finally:
            await world.stop_worker()
    return violations(world, statuses) + unreplayable, world


def describe(world: FleetWorld) -> list[str]:
    """What happened, and the history of every site file, for a seed that found a violation."""
    lines = [*world.log]
    for plan in world.plans:
        lines.append(
            f"delivery {plan.delivery_id[-8:]} = {plan.artifact_tag} ({world.app_of[plan.delivery_id]})"
        )
    for fleet in world.fleets.values():
        for site in fleet.sites:
            path = fleet.file(site)
            lines.append(f"history of {path}:")
            for sha, delivery, step in writes(world.gitops, path):
                lines.append(
                    f"  {sha[:7]} {delivery[-8:] or 'human':8} {step:24} {tag_at(world.gitops, sha, path)}"
                )
    return lines


def summary(seed: int, world: FleetWorld, found: list[str]) -> str:
    sites = "+".join(str(len(fleet.sites)) for fleet in world.fleets.values())
    return (
        f"seed {seed}: {len(world.plans)} deliveries on {sites} sites ({world.concurrency}), "
        f"{world.human_commits} human commits ({world.pins} pins, {world.edits} edits), {len(world.rewinds)} rewinds "
        f"(dropping {world.rewound_writes} deliveries' commits, {world.marked_off_branch} shown off the branch), "
        f"{world.health_flips} health flips, {world.marked_changed} targets shown changed since, "
        f"{'OK' if not found else 'VIOLATIONS'} {' '.join(world.phases)}"
    )


async def test_git_tells_the_truth_about_fleets_after_a_random_interleaving(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    seed = 1
    found, world = await run_fleet_interleaving(temporal_env.client, tmp_path, seed)
    assert not found, "\n".join([*found, "what happened:", *describe(world)])
    assert len(world.plans) >= 2  # the seed made releases overlap


async def _main(first: int, last: int) -> None:
    import tempfile

    async with await start_dev_server() as env:
        for seed in range(first, last + 1):
            with tempfile.TemporaryDirectory() as root:
                keep = Path(tempfile.gettempdir()) / "aicd-unreplayable"
                keep.mkdir(exist_ok=True)
                try:
                    found, world = await run_fleet_interleaving(env.client, Path(root), seed, keep=keep)
                except AssertionError as stuck:
                    print(f"seed {seed}: STUCK {stuck}", flush=True)
                    continue
                print(summary(seed, world, found), flush=True)
                for line in found:
                    print("   ", line, flush=True)
                if found:
                    for line in describe(world):
                        print("      ", line, flush=True)


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), int(sys.argv[2])))
