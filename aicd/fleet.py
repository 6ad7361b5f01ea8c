"""Edge fleet arithmetic: pure and deterministic, so the fleet workflow may run it and tests can pin it.

- Which sites go in which batch: `batches` are cumulative shares of the fleet (`1%`, `10%`, `50%`, `100%`),
  taken in fleet order (the order of the fleet file, so the first sites listed are the first to move). A
  share is rounded up, and every batch moves at least one new site, so `1%` of 7 sites is 1 site; batches
  that would move nothing (more batches than sites) are dropped. Every site is in exactly one batch.
- How many failed sites the fleet tolerates: `maxFailures` as a count, or as a percentage of the fleet
  rounded down (a share never tolerates more than it says: `2%` of 40 sites is 0).
- A status that stays small however large the fleet: counts per state and a capped list of failed sites.
- After the delivery rolled the fleet back: which sites its batches had moved (the ones to sync back), and the
  counts as Git now has them - no site on the release; those whose files someone else wrote since are left as
  they are, and counted so.

Shares are exact fractions (`Fraction("0.07")`), never floats: `7% of 100` must be 7 sites, not 8.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, get_args

import yaml

from aicd.redact import has_credentials, redact_credentials
from aicd.spec.placeholders import render

# `{{site}}` is as valid in a spec as `{{ site }}`.
SITE_PLACEHOLDER = re.compile(r"\{\{\s*site\s*\}\}")
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%$")
FAILED_SITES_SHOWN = 20  # names listed in a status or a reason; the rest are counted
# A site's state, in the order statuses list them and the dashboard's grid fills: sites move in fleet order, so
# the ones through their batch come first. `rolled-back`: the delivery's rollback put the site back on its
# previous version after the fleet had moved it (updated, or updating in the batch in progress). `left-as-is`:
# the rollback left the site's file as someone else (a newer delivery, a human) wrote it since the fleet moved it:
# neither this release nor, by this delivery's doing, its previous version.
SiteState = Literal["updated", "rolled-back", "left-as-is", "updating", "failed", "pending"]
SITE_STATES: tuple[SiteState, ...] = get_args(SiteState)


class FleetError(ValueError):
    """The fleet or its settings make no sense; the message says where and what."""


@dataclass
class Site:
    name: str
    # Optional URL the site answers 2xx on when healthy (its agent's health endpoint); checked after the
    # site's sync, so a site that applied the new version but does not come up counts as failed.
    health: str = ""


def parse_share(text: str) -> Fraction:
    """`12.5%` -> Fraction(1, 8), exactly."""
    match = PERCENT.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise FleetError(f"unparsable percentage {text!r} (use e.g. 5%, 12.5%)")
    return Fraction(match.group(1)) / 100


def batch_ends(total: int, batches: Sequence[str]) -> list[int]:
    """Cumulative end index (exclusive) of each non-empty batch of a fleet of `total` sites."""
    if total < 1:
        raise FleetError("the fleet has no sites")
    if not batches:
        raise FleetError("an edge target needs at least one batch")
    shares = [parse_share(batch) for batch in batches]
    if any(later <= earlier for earlier, later in itertools.pairwise(shares)) or shares[-1] != 1:
        raise FleetError(f"batches {list(batches)} must increase and end at 100%")
    ends: list[int] = []
    previous = 0
    for share in shares:
        end = min(total, max(math.ceil(share * total), previous + 1))
        if end > previous:
            ends.append(end)
            previous = end
    return ends


def batch_slices(total: int, batches: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of each non-empty batch."""
    ends = batch_ends(total, batches)
    return list(zip([0, *ends[:-1]], ends, strict=True))


def failure_budget(total: int, max_failures: int | str | None) -> int:
    """Failed sites tolerated: a count as written, a percentage of the fleet rounded down; default 0."""
    if max_failures is None:
        return 0
    if isinstance(max_failures, bool) or not isinstance(max_failures, int | str):
        raise FleetError(f"maxFailures {max_failures!r} must be a count or a percentage")
    if isinstance(max_failures, int):
        if max_failures < 0:
            raise FleetError(f"maxFailures {max_failures} must not be negative")
        return max_failures
    return math.floor(parse_share(max_failures) * total)


def parse_fleet(text: str, where: str) -> list[Site]:
    """A fleet file: a YAML list whose items are site names or `{name: ..., health: <url>}` mappings."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # 10,000 entries: the C loader is ~10x faster
    try:
        document = yaml.load(text, Loader=loader)
    except yaml.YAMLError as error:
        raise FleetError(f"{where}: not valid YAML: {error}") from None
    if not isinstance(document, list):
        raise FleetError(f"{where}: a fleet file is a YAML list of site names, not {type(document).__name__}")
    return sites_from_list(document, where)


def sites_from_list(items: Sequence[Any], where: str) -> list[Site]:
    sites: list[Site] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        at = f"{where}[{index}]"
        if isinstance(item, Mapping):
            unknown = set(item) - {"name", "health"}
            if unknown:
                raise FleetError(
                    f"{at}: unknown keys {sorted(unknown)} (a site has `name` and optional `health`)"
                )
            name, health = item.get("name"), item.get("health", "")
        else:
            name, health = item, ""
        if not isinstance(name, str) or not SITE_NAME.fullmatch(name):
            raise FleetError(
                f"{at}: site name {name!r} must be a string of letters, digits, '_', '.', '-' (quote numbers)"
            )
        if not isinstance(health, str) or (health and not health.startswith(("http://", "https://"))):
            raise FleetError(f"{at}: health {health!r} must be an http(s) URL")
        # Sites travel in activity inputs, and their health reasons into history.
        if health and has_credentials(health):
            raise FleetError(
                f"{at}: health {redact_credentials(health)!r} holds a password or token; a site's health"
                " check must not need one"
            )
        if name in seen:
            raise FleetError(f"{at}: site {name} is listed twice")
        seen.add(name)
        sites.append(Site(name, health))
    if not sites:
        raise FleetError(f"{where}: the fleet has no sites")
    return sites


@dataclass
class FleetFile:
    """A fleet file as read once, when the fleet starts: where it is, the commit it was read at, how many
    sites it lists. The sites themselves never travel through workflow history (a file of 170,000 names
    passes Temporal's 2 MB payload limit): activities read the ones they need from Git at `revision`."""

    path: str
    revision: str
    total: int

    def slice(self, start: int, end: int) -> FleetSlice:
        return FleetSlice(self.path, self.revision, start, end)


@dataclass
class FleetSlice:
    """Sites `start`..`end` (fleet order, end exclusive) of the fleet file at `path` as of commit `revision`:
    what a batch's commit or a chunk of its health checks names instead of the sites themselves."""

    path: str
    revision: str
    start: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.start

    def chunks(self, size: int) -> list[FleetSlice]:
        return [
            FleetSlice(self.path, self.revision, start, min(self.end, start + size))
            for start in range(self.start, self.end, size)
        ]


def site_path(template: str, site: str) -> str:
    """The site's values file: the target's path with `{{ site }}` filled in."""
    return render(template, {"site": site}, partial=True)


def sites_of(template: str, paths: Iterable[str]) -> list[str]:
    """The sites whose files (the target's path template filled in) are among `paths`, in the order of `paths`;
    other paths (a target's flags file) name none."""
    parts = SITE_PLACEHOLDER.split(template)
    if len(parts) < 2:
        return []
    pattern = re.compile("^" + "([^/]+)".join(map(re.escape, parts)) + "$")
    sites: list[str] = []
    for path in paths:
        match = pattern.match(path)
        if match is not None and len(set(match.groups())) == 1 and match.group(1) not in sites:
            sites.append(match.group(1))
    return sites


def site_variables(site: str, stage: str, target: str) -> dict[str, str]:
    return {"site": site, "stage": stage, "target": target}


def chunk_size(batch_sites: int, base: int = 250, max_chunks: int = 200) -> int:
    """Sites per health-check activity: `base`, grown so that no batch needs more than `max_chunks`
    activities (each costs a handful of history events)."""
    return max(base, math.ceil(batch_sites / max_chunks))


def chunked(items: Sequence[Site], size: int) -> list[list[Site]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def with_reasons(failed: Mapping[str, str], names: Sequence[str], cap: int = 5) -> str:
    """`a (why); b (why)`, the first `cap` of `names` with their reasons, then the rest by name."""
    shown = "; ".join(f"{name} ({failed[name]})" for name in names[:cap])
    more = f"; and {len(names) - cap} more: {describe_sites(names[cap:])}" if len(names) > cap else ""
    return shown + more


def describe_sites(names: Sequence[str], cap: int = FAILED_SITES_SHOWN) -> str:
    """`a, b, c` or `a, b, c and 17 more`."""
    shown = ", ".join(names[:cap])
    return f"{shown} and {len(names) - cap} more" if len(names) > cap else shown


@dataclass
class FleetTally:
    """Where the fleet stands: sites before `done` are through their batch (updated or failed), the next
    `updating` are in the batch being rolled out, the rest are pending."""

    total: int
    done: int = 0
    updating: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # site -> why; every failed site, in order

    def by_state(self) -> dict[str, int]:
        failed = len(self.failed)
        counts = {
            "pending": self.total - self.done - self.updating,
            "updating": self.updating,
            "updated": self.done - failed,
            "failed": failed,
        }
        return {state: count for state, count in counts.items() if count}

    def failed_names(self, cap: int = FAILED_SITES_SHOWN) -> list[str]:
        return list(self.failed)[:cap]

    def updated_percent(self) -> int:
        return (100 * (self.done - len(self.failed))) // self.total if self.total else 0


def in_site_order(by_state: Mapping[str, int]) -> list[tuple[str, int]]:
    """(state, count) in SITE_STATES order; a state this code does not know (a newer worker's) follows by name."""
    known = [(state, by_state[state]) for state in SITE_STATES if state in by_state]
    return known + sorted((state, count) for state, count in by_state.items() if state not in SITE_STATES)


def rolled_back(
    by_state: Mapping[str, int],
    left: Collection[str] = (),
    failed: Collection[str] = (),
    left_restored: int | None = None,
) -> dict[str, int]:
    """A fleet's counts once the delivery's rollback restored the site files it moved: the sites on the release
    (updated) or committed to it (updating) are rolled back, but for those whose files the rollback `left` as
    someone else wrote them since: `left-as-is`. Failed sites stay failed (their batch's restore or the rollback
    put them back, or their file is left: they failed this release either way); pending ones were never touched.
    `left_restored` says how many of the `left` sites the delivery had put back itself before (the failed ones:
    the rollback counts them, see activities.gitops.CommitResult), so any number of failed sites counts right;
    without it (a rollback result from before it counted) a left site among `failed` - the failed sites as the
    status names them, capped at FAILED_SITES_SHOWN - is a failed one, and one past the cap is miscounted
    left-as-is. Never more sites left-as-is than were on the release. Counting again (a second rollback finds
    the same files left) changes nothing."""
    on_release = ("updated", "updating", "rolled-back", "left-as-is")
    counts = {state: count for state, count in by_state.items() if state not in on_release}
    moved = sum(by_state.get(state, 0) for state in on_release)
    # A left site that failed is no site on the release: one its batch put back (left_restored), or one a
    # person took over before any restore (named among `failed`; the list may be capped, the count is not).
    named_failed = len(set(left).intersection(failed))
    left_count = len(left) - (named_failed if left_restored is None else max(left_restored, named_failed))
    left_on_release = min(moved, max(0, left_count))
    if moved - left_on_release:
        counts["rolled-back"] = moved - left_on_release
    if left_on_release:
        counts["left-as-is"] = left_on_release
    return dict(in_site_order(counts))


@dataclass
class MovedSites:
    """The sites a fleet's batch commits moved to the release - the first `count` of the fleet, in fleet order -
    which a rollback of the fleet puts back: as sites (an inline fleet) or as a slice of the fleet file (whose
    names stay out of workflow history). Those its batches restored are among them: back on their previous
    version in the rollback commit as well."""

    sites: list[Site] = field(default_factory=list)
    fleet_sites: FleetSlice | None = None

    @classmethod
    def of(cls, batch: list[Site] | FleetSlice) -> MovedSites:
        """The sites of `batch` (inline sites, or a slice of the fleet file), the inverse of `batch`."""
        return cls(batch) if isinstance(batch, list) else cls(fleet_sites=batch)

    @classmethod
    def every(cls, sites: list[Site] | FleetFile) -> MovedSites:
        """Every site of the fleet: what to put back when which ones moved is not known."""
        return cls.of(sites.slice(0, sites.total) if isinstance(sites, FleetFile) else sites)

    @property
    def count(self) -> int:
        return self.fleet_sites.count if self.fleet_sites is not None else len(self.sites)

    @property
    def batch(self) -> list[Site] | FleetSlice:
        """The moved sites as a batch's sites are given to the activities."""
        return self.fleet_sites if self.fleet_sites is not None else self.sites
