"""Edge fleet arithmetic: batch sizes from cumulative percentages, the maxFailures budget, summaries and
fleet files."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aicd.fleet import (
    FleetError,
    FleetFile,
    FleetSlice,
    FleetTally,
    MovedSites,
    Site,
    batch_ends,
    batch_slices,
    chunk_size,
    chunked,
    describe_sites,
    failure_budget,
    in_site_order,
    parse_fleet,
    parse_share,
    rolled_back,
    site_path,
    sites_from_list,
    sites_of,
)

STANDARD = ["1%", "10%", "50%", "100%"]


def sizes(total: int, batches: list[str]) -> list[int]:
    return [end - start for start, end in batch_slices(total, batches)]


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (1, [1]),  # more batches than sites: the empty ones are dropped
        (7, [1, 1, 2, 3]),  # 1% of 7 is still one site; 10% is rounded up but must add a site
        (100, [1, 9, 40, 50]),
        (10_000, [100, 900, 4_000, 5_000]),
    ],
)
def test_standard_batches(total: int, expected: list[int]) -> None:
    assert sizes(total, STANDARD) == expected
    assert batch_ends(total, STANDARD)[-1] == total


def test_exact_percentages_never_float_rounding() -> None:
    # 0.07 * 100 is 7.000000000000001 in floats: ceil would say 8.
    assert batch_ends(100, ["7%", "100%"]) == [7, 100]
    assert batch_ends(1_000, ["12.5%", "100%"]) == [125, 1_000]
    assert parse_share("12.5%") * 8 == 1


@given(
    total=st.integers(min_value=1, max_value=20_000),
    cuts=st.lists(st.integers(min_value=1, max_value=999), max_size=6, unique=True),
)
def test_every_site_exactly_once_in_nonempty_cumulative_batches(total: int, cuts: list[int]) -> None:
    batches = [f"{cut / 10:g}%" for cut in sorted(cuts)] + ["100%"]
    slices = batch_slices(total, batches)
    covered = [index for start, end in slices for index in range(start, end)]
    assert covered == list(range(total))  # exactly once, in fleet order
    assert all(end > start for start, end in slices)
    assert len(slices) <= len(batches)
    first_share = parse_share(batches[0])
    assert slices[0][1] >= max(1, math.ceil(first_share * total))  # the first batch is never short


@pytest.mark.parametrize(
    "bad", [[], ["50%"], ["50%", "10%", "100%"], ["10%", "10%", "100%"], ["ten", "100%"]]
)
def test_bad_batches_are_refused(bad: list[str]) -> None:
    with pytest.raises(FleetError):
        batch_ends(10, bad)


def test_empty_fleet_is_refused() -> None:
    with pytest.raises(FleetError, match="no sites"):
        batch_ends(0, STANDARD)


@pytest.mark.parametrize(
    ("total", "max_failures", "budget"),
    [
        (40, None, 0),
        (40, 3, 3),
        (40, 0, 0),
        (40, "10%", 4),
        (40, "2%", 0),  # a share never tolerates more than it says: rounded down
        (10_000, "2%", 200),
        (10_000, "0.5%", 50),
        (7, "50%", 3),
        (5, 9, 9),  # a count is taken as written
    ],
)
def test_failure_budget(total: int, max_failures: int | str | None, budget: int) -> None:
    assert failure_budget(total, max_failures) == budget


@pytest.mark.parametrize("bad", [-1, "x%", "5", True, 1.5])
def test_bad_failure_budget(bad: object) -> None:
    with pytest.raises(FleetError):
        failure_budget(10, bad)  # type: ignore[arg-type]


def test_tally_summarises_counts_and_caps_names() -> None:
    tally = FleetTally(total=10_000)
    assert tally.by_state() == {"pending": 10_000}
    tally.updating = 100
    assert tally.by_state() == {"pending": 9_900, "updating": 100}
    tally.updating, tally.done = 0, 1_000
    tally.failed = {f"site-{index:05d}": "HTTP 503" for index in range(30)}
    assert tally.by_state() == {"pending": 9_000, "updated": 970, "failed": 30}
    assert tally.failed_names() == [f"site-{index:05d}" for index in range(20)]
    assert tally.updated_percent() == 9
    assert sum(tally.by_state().values()) == tally.total


def test_describe_sites_caps_the_list() -> None:
    assert describe_sites(["a", "b"]) == "a, b"
    assert describe_sites([str(index) for index in range(25)], cap=3) == "0, 1, 2 and 22 more"


def test_fleet_file_names_and_health_urls() -> None:
    text = "# edge PoPs\n- ams1\n- {name: fra1, health: 'http://fra1.edge:8080/healthz'}\n- name: lhr1\n"
    assert parse_fleet(text, "fleets/edge.yaml") == [
        Site("ams1"),
        Site("fra1", "http://fra1.edge:8080/healthz"),
        Site("lhr1"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sites: [a]", "YAML list"),
        ("[]", "no sites"),
        ("- a\n- a\n", "listed twice"),
        ("- 42\n", "quote numbers"),
        ("- 'a b'\n", "site name"),
        ("- {name: a, url: x}\n", "unknown keys"),
        ("- {name: a, health: 'ftp://x'}\n", "http"),
        (
            "- {name: a, health: 'https://probe:hunter2@pop-a.example/healthz'}\n",
            "probe:\\*\\*\\*@.*holds a password",
        ),
        (
            "- {name: a, health: 'https://pop-a.example/healthz?access_token=abc123'}\n",
            "holds a password or token",
        ),
        ("- [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_fleet_files_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(FleetError, match=message) as caught:
        parse_fleet(text, "fleets/edge.yaml")
    assert "fleets/edge.yaml" in str(caught.value) and "hunter2" not in str(caught.value)


def test_inline_sites_and_paths() -> None:
    assert sites_from_list(["a", "b"], "targets.edge.sites") == [Site("a"), Site("b")]
    assert site_path("apps/x/edge/{{ site }}/values.yaml", "ams1") == "apps/x/edge/ams1/values.yaml"
    assert site_path("apps/x/edge/{{site}}.yaml", "ams1") == "apps/x/edge/ams1.yaml"


def test_chunks_bound_activities_per_batch() -> None:
    assert chunk_size(40) == 250
    assert chunk_size(5_000) == 250
    assert chunk_size(1_000_000) == 5_000  # never more than 200 health activities in one batch
    sites = [Site(f"s{index}") for index in range(600)]
    parts = chunked(sites, 250)
    assert [len(part) for part in parts] == [250, 250, 100]
    assert [site for part in parts for site in part] == sites


def test_a_rolled_back_fleet_counts_no_site_on_the_release() -> None:
    """The rollback restored every site file the fleet moved: updated and updating (committed) sites are rolled
    back; failed and pending ones keep their state; listed in SITE_STATES order, unknown states last."""
    counts = rolled_back({"pending": 10, "updated": 5, "updating": 2, "failed": 3})
    assert list(counts.items()) == [("rolled-back", 7), ("failed", 3), ("pending", 10)]
    assert rolled_back(counts) == counts  # a second rollback finds nothing more to move
    assert rolled_back({"pending": 4}) == {"pending": 4} and rolled_back({}) == {}
    assert in_site_order({"zapped": 1, "pending": 2, "updated": 3}) == [
        ("updated", 3),
        ("pending", 2),
        ("zapped", 1),
    ]


def test_sites_whose_files_a_rollback_left_count_left_as_is() -> None:
    """Of the sites on the release, those whose files the rollback left to their other writer are not rolled
    back; a left failed site stays failed; counting again changes nothing; never more than were moved."""
    by_state = {"pending": 10, "updated": 5, "updating": 2, "failed": 3}
    counts = rolled_back(by_state, left=["s1", "s2", "f1"], failed=["f1", "f2", "f3"])
    assert list(counts.items()) == [("rolled-back", 5), ("left-as-is", 2), ("failed", 3), ("pending", 10)]
    assert rolled_back(counts, left=["s1", "s2", "f1"], failed=["f1", "f2", "f3"]) == counts
    assert rolled_back({"updated": 1, "failed": 1}, left=["s1", "f9"]) == {"left-as-is": 1, "failed": 1}


def test_left_failed_sites_count_failed_however_many_failed() -> None:
    """25 failed sites, of which a status names 20: a left failed site past them (f22) is one of the left files
    the delivery had put back itself, as the rollback counts them, and stays failed; without that count (a
    rollback result from before it), the capped names are all there is and f22 counts left-as-is."""
    failed = [f"f{index:02d}" for index in range(25)]
    by_state = {"updated": 5, "failed": 25, "pending": 10}
    counts = rolled_back(by_state, left=["s1", "f22"], failed=failed[:20], left_restored=1)
    assert counts == {"rolled-back": 4, "left-as-is": 1, "failed": 25, "pending": 10}
    assert rolled_back(counts, left=["s1", "f22"], failed=failed[:20], left_restored=1) == counts
    assert rolled_back(by_state, left=["f1", "f22"], failed=failed[:20], left_restored=2) == {
        "rolled-back": 5,
        "failed": 25,
        "pending": 10,
    }
    older = rolled_back(by_state, left=["s1", "f22"], failed=failed[:20])
    assert older == {"rolled-back": 3, "left-as-is": 2, "failed": 25, "pending": 10}


def test_a_failed_site_a_person_took_over_before_any_restore_stays_failed() -> None:
    """maxFailures 0: a site fails its health check and on-call pins it back before the rollback, which then
    leaves its file. The delivery never put it back itself (left_restored 0), yet it is a failed site, not one
    of the sites on the release: those are all rolled back."""
    counts = rolled_back(
        {"updated": 2, "failed": 1, "pending": 9}, left=["pop-2"], failed=["pop-2"], left_restored=0
    )
    assert counts == {"rolled-back": 2, "failed": 1, "pending": 9}


def test_the_sites_of_paths_through_the_path_template() -> None:
    paths = ["apps/web/edge/pop-2/values.yaml", "flags/web.json", "apps/web/edge/pop-1/values.yaml", "x/y"]
    assert sites_of("apps/web/edge/{{ site }}/values.yaml", paths) == ["pop-2", "pop-1"]
    assert sites_of("edge/{{site}}.yaml", ["edge/a.yaml", "edge/a/b.yaml"]) == ["a"]
    assert sites_of("apps/web/values.yaml", ["apps/web/values.yaml"]) == []  # not a fleet: no sites


def test_every_site_of_a_fleet_as_moved_sites() -> None:
    """What a rollback syncs back when which sites moved is not known: the inline sites, or the whole file."""
    sites = [Site("a"), Site("b", "http://b/healthz")]
    assert MovedSites.every(sites).batch == sites
    whole = MovedSites.every(FleetFile("fleets/edge.yaml", "c0ffee", 3))
    assert whole.batch == FleetSlice("fleets/edge.yaml", "c0ffee", 0, 3) and whole.count == 3
