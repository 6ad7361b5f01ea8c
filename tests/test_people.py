"""aicd.people: who an identity is, per channel; the plan carries the map and `aicd plan` shows people."""

from __future__ import annotations

from pathlib import Path

from aicd.people import Person, PersonRef, Roster, describe, distinct_people, resolve, resolve_listed
from aicd.plan import build_plan, render_tree
from aicd.spec.loader import parse_spec_bytes
from aicd.testing.engine import git, make_repo
from aicd.trailers import (
    CommitActor,
    CommitTrailers,
    commit_message,
    parse_actor,
    trailer_values,
)
from tests.helpers_spec import MINIMAL

ALICE = Person("alice", slack="U0ALICE", dashboard="alice@example.com", cli="alice")
BOB = Person("bob", cli="bob")
PEOPLE = [ALICE, BOB]


def test_an_identity_is_its_person_only_through_its_own_channel() -> None:
    assert resolve(PEOPLE, "U0ALICE", "slack") == PersonRef("alice", declared=True)
    assert resolve(PEOPLE, "alice@example.com", "dashboard") == PersonRef("alice", declared=True)
    assert resolve(PEOPLE, "alice", "cli") == PersonRef("alice", declared=True)
    # Alice's Slack ID signed in on the dashboard is someone else, a person of their own.
    assert resolve(PEOPLE, "U0ALICE", "dashboard") == PersonRef("U0ALICE", channel="dashboard")
    assert resolve(PEOPLE, "U0ALICE", "dashboard") != resolve(PEOPLE, "U0ALICE", "slack")
    # An older client sends no channel: any of a person's identities is theirs.
    assert resolve(PEOPLE, "U0ALICE") == PersonRef("alice", declared=True)


def test_an_undeclared_identity_is_never_the_person_of_that_name() -> None:
    # Bob has no dashboard identity: a dashboard sign-in reading "bob" is not Bob.
    assert resolve(PEOPLE, "bob", "dashboard") == PersonRef("bob")
    assert resolve(PEOPLE, "bob", "dashboard") != resolve_listed(PEOPLE, "bob")
    assert not Roster.of(PEOPLE, ["bob"]).admits("bob", "dashboard")
    assert Roster.of(PEOPLE, ["bob"]).admits("bob", "cli")


def test_an_undeclared_slack_user_id_counts_only_from_slack() -> None:
    """A spec without people lists Slack approvers by user ID: only Slack's signed requests are them, never a
    dashboard sign-in or a CLI name someone chose to read like one; other undeclared names match anywhere."""
    approvers = Roster.of((), ["U024BE7LH", "W0ENTERPRISE", "oncall"])
    assert approvers.admits("U024BE7LH", "slack") and approvers.admits("W0ENTERPRISE", "slack")
    assert approvers.admits("U024BE7LH")  # an older client names no channel
    for channel in ("dashboard", "cli"):
        assert not approvers.admits("U024BE7LH", channel) and not approvers.admits("W0ENTERPRISE", channel)
        assert approvers.admits("oncall", channel)


def test_a_list_names_each_person_once_whichever_identity_it_uses() -> None:
    assert distinct_people(PEOPLE, ["U0ALICE", "alice", "alice@example.com", "carol"]) == [
        PersonRef("alice", declared=True),
        PersonRef("carol"),
    ]
    roster = Roster.of(PEOPLE, ["U0ALICE", "carol"])
    assert roster.names() == ["alice", "carol"]
    assert roster.admits("alice", "cli") and roster.admits("carol", "slack")
    assert not roster.admits("bob", "cli")


def test_without_people_every_identity_is_compared_exactly() -> None:
    roster = Roster.of((), ["U024BE7LH", "alice"])
    assert roster.admits("U024BE7LH", "slack") and roster.admits("alice", "dashboard")
    assert not roster.admits("u024be7lh", "slack")
    assert describe(resolve((), "alice", "cli"), "alice", "cli") == "alice"


def test_describe_names_the_person_and_the_identity_used() -> None:
    alice = PersonRef("alice", declared=True)
    assert describe(alice, "U0ALICE", "slack") == "alice (as U0ALICE via slack)"
    assert describe(alice, "alice", "cli") == "alice (via cli)"
    assert describe(alice, "U0ALICE") == "alice (as U0ALICE)"


def test_the_actor_trailer_names_the_person_and_reads_back() -> None:
    """Aicd-Actor: the person first (what `git log` readers look for), the identity and channel after; an
    undeclared identity and aicd itself stay single words, as in commits made before people."""
    cases = [
        (resolve(PEOPLE, "U0ALICE", "slack"), "U0ALICE", "slack", "alice (as U0ALICE via slack)"),
        (resolve(PEOPLE, "alice", "cli"), "alice", "cli", "alice (via cli)"),
        (resolve(PEOPLE, "alice@example.com"), "alice@example.com", "", "alice (as alice@example.com)"),
    ]
    for person, identity, via, written in cases:
        assert describe(person, identity, via) == written
        assert parse_actor(written) == CommitActor("alice", identity, via)
        assert parse_actor(written).person == "alice"
    # The dashboard's sign-in reading U0ALICE is not Alice: the trailer keeps the identity alone.
    assert describe(resolve(PEOPLE, "U0ALICE", "dashboard"), "U0ALICE", "dashboard") == "U0ALICE"
    for older in ("U0ALICE", "aicd", "bob"):
        assert parse_actor(older) == CommitActor(older) and parse_actor(older).person == ""
    assert parse_actor("not (what aicd writes)") == CommitActor("not (what aicd writes)")


def test_the_plan_carries_the_people_and_shows_them() -> None:
    raw = (
        MINIMAL.read_bytes()
        .replace(
            b"  stages:\n",
            b"  people:\n    alice: {slack: U0ALICE, cli: alice}\n  stages:\n",
        )
        .replace(
            b"    - name: production\n",
            b"    - name: production\n      approval: {approvers: [U0ALICE, alice, bob], minApprovals: 2}\n",
        )
    )
    spec, errors = parse_spec_bytes(raw, "spec.yaml")
    assert errors == [] and spec is not None
    plan = build_plan(spec, "a1b2c3d" + "0" * 33)
    assert plan.people == [Person("alice", slack="U0ALICE", cli="alice")]
    tree = render_tree(plan)
    assert "    approval gate: 2 of alice, bob within 24h" in tree
    assert "  people: alice (slack U0ALICE, cli alice)" in tree


def test_a_slack_identity_must_be_a_user_id() -> None:
    raw = MINIMAL.read_bytes().replace(b"  stages:\n", b"  people:\n    alice: {slack: alice}\n  stages:\n")
    errors = [str(error) for error in parse_spec_bytes(raw, "spec.yaml")[1]]
    assert errors == [
        "spec.yaml:25:13: error: $.spec.people.alice.slack: 'alice' does not match ^[UW][A-Z0-9]{2,}$"
    ]


def test_a_line_break_in_an_actor_cannot_end_the_trailer_block(tmp_path: Path) -> None:
    """Whatever reaches a commit as its actor (a rollout told by a client other than aicd's), the trailers
    stay the message's last paragraph, so git and aicd's ownership checks still read whose commit it is."""
    repo, _ = make_repo(tmp_path, "repo", {"a": "1\n"})
    work = tmp_path / "work"
    git("clone", "-q", repo, str(work))
    trailers = CommitTrailers(
        "web@" + "a" * 40, "prod/web/0-setWeight", "eve\n\nnot a trailer", "delivery-web"
    )
    git(
        "-c",
        "user.name=aicd",
        "-c",
        "user.email=aicd@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        commit_message("aicd: web", trailers),
        cwd=work,
    )
    read = git("log", "-1", "--format=%(trailers:only,unfold)", cwd=work)
    assert trailer_values(read) == {
        "Aicd-Delivery": "web@" + "a" * 40,
        "Aicd-Delivery-Id": "delivery-web",
        "Aicd-Step": "prod/web/0-setWeight",
        "Aicd-Actor": "eve not a trailer",
    }
