"""People and the identities they act under: the one place where an identity becomes a person.

One person may act from Slack (their Slack user ID), the dashboard (their sign-in) and the CLI (`--as`); the
spec's `people` says which identities are whose, and an approval then counts once per person, whichever
channel it came from. The workflow's validators and approval gate, the steering rule (aicd.steering), the
spec checks and every view resolve identities here; data in, data out.

- An identity matches a person only through the channel it is declared for: Alice's Slack user ID counts as
  Alice from Slack, while a dashboard sign-in that happens to read `U0ALICE` is not her. An action from a
  channel aicd does not know (an older client sends none) matches a person's identity on any channel.
- An identity no person declares is a person of its own, compared exactly: a spec without `people` behaves
  as it did before there were people, but for one thing: an undeclared identity shaped like a Slack user ID
  (`U024BE7LH`) is that Slack user only from Slack (or from a client that names no channel). Slack signs its
  user IDs; a dashboard sign-in is whatever name its owner chose at the identity provider (a GitHub login
  through oauth2-proxy), and Slack IDs are in the spec for anyone to copy.
- A list of who may do something (approvers, overriders, break-glass) may name a person, or any identity of
  a person (which then stands for that person), or an identity no person declares.

Nothing here verifies an identity: the front doors do (Slack's request signature, the dashboard's sign-in),
and whoever may call Temporal may send any identity (docs/chatops.md, "Who is who").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

# Where a person acts from (HumanAction.via), each with an identity of its own.
Channel = Literal["slack", "dashboard", "cli"]
CHANNELS: tuple[Channel, ...] = ("slack", "dashboard", "cli")

# The identity aicd acts under itself (automatic rollbacks, supersedes, the commits' Aicd-Actor trailer): no
# person may declare or be listed under it, or their actions would read as aicd's own.
SYSTEM_ACTOR = "aicd"

# What every front door takes as an identity: no blanks, control characters or invisible ones (a display
# name is none; `alice` followed by a zero-width space would read as Alice everywhere it is shown).
IDENTITY = re.compile(r"[^\s\x00-\x1f\x7f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,200}")
# A Slack user ID (`U024BE7LH`; `W...` in Enterprise Grid), as Slack signs it in every request.
SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{6,}")


def acting_identity_problem(identity: str, via: str = "") -> str:
    """Why `identity` may not act through the channel `via` ("" when it may): each record of the action (the
    action log, the `Aicd-Actor` trailer, Slack's message) names who acted by it alone."""
    if not IDENTITY.fullmatch(identity) or (via and via not in CHANNELS):
        return "not an identity"
    if identity.strip().casefold() == SYSTEM_ACTOR:
        return f"{SYSTEM_ACTOR!r} is the identity of aicd's own actions"
    if via and via != "slack" and SLACK_USER_ID.fullmatch(identity):
        return f"a Slack user ID acts only through Slack's signed requests, not via {via}"
    return ""


@dataclass(frozen=True)
class Person:
    """A person of the spec's `people` and their identity on each channel (None: not on that channel)."""

    name: str
    slack: str | None = None  # Slack user ID (U024BE7LH), as Slack signs it
    dashboard: str | None = None  # the dashboard sign-in (tokens file or proxy header)
    cli: str | None = None  # `aicd ... --as NAME` / AICD_ACTOR

    def identity(self, channel: str) -> str | None:
        return next((found for declared, found in self.identities() if declared == channel), None)

    def identities(self) -> list[tuple[Channel, str]]:
        declared = {"slack": self.slack, "dashboard": self.dashboard, "cli": self.cli}
        return [(channel, found) for channel in CHANNELS if (found := declared[channel]) is not None]


@dataclass(frozen=True)
class PersonRef:
    """Who someone is when counting: a declared person by name, or an identity no person declares (a person
    of its own). The two never compare equal, so an undeclared sign-in reading `alice` is not Alice."""

    name: str
    declared: bool = False
    # An undeclared Slack-shaped identity from another channel: never the Slack user of that ID.
    channel: str = ""

    def __str__(self) -> str:
        return self.name


def resolve(people: Sequence[Person], identity: str, via: str = "") -> PersonRef:
    """The person acting as `identity` through the channel `via` (HumanAction.via)."""
    for person in people:
        if via in CHANNELS:
            if person.identity(via) == identity:
                return PersonRef(person.name, declared=True)
        elif identity in (found for _, found in person.identities()):
            return PersonRef(person.name, declared=True)
    if via in CHANNELS and via != "slack" and SLACK_USER_ID.fullmatch(identity):
        return PersonRef(identity, channel=via)
    return PersonRef(identity)


def resolve_listed(people: Sequence[Person], entry: str) -> PersonRef:
    """An entry of a list of who may act: a person's name, any identity of a person, or an undeclared
    identity."""
    if any(person.name == entry for person in people):
        return PersonRef(entry, declared=True)
    return resolve(people, entry)


def distinct_people(people: Sequence[Person], entries: Iterable[str]) -> list[PersonRef]:
    """The people a list names, in order, each once (`[U0ALICE, alice]` is Alice once)."""
    return list(dict.fromkeys(resolve_listed(people, entry) for entry in entries))


@dataclass(frozen=True)
class Roster:
    """A list of who may do something (a stage's approvers, a gate's overriders), read through the people
    map."""

    people: tuple[Person, ...]
    entries: tuple[str, ...]

    @classmethod
    def of(cls, people: Iterable[Person], entries: Iterable[str]) -> Roster:
        return cls(tuple(people), tuple(entries))

    def members(self) -> list[PersonRef]:
        return distinct_people(self.people, self.entries)

    def admits(self, identity: str, via: str = "") -> bool:
        return resolve(self.people, identity, via) in self.members()

    def names(self) -> list[str]:
        return [member.name for member in self.members()]


def describe(person: PersonRef, identity: str, via: str = "") -> str:
    """How a view names who acted: `alice (as U0ALICE via slack)`; an undeclared identity is itself."""
    if not person.declared:
        return identity
    channel = f"via {via}" if via else ""
    if identity == person.name:
        return f"{person.name} ({channel})" if channel else person.name
    return f"{person.name} (as {identity}{' ' + channel if channel else ''})"
