"""The trailers of aicd's GitOps commits: the one place that writes and reads them.

Every commit aicd makes says which delivery made it and when that delivery started, so any later write can
tell from Git alone who owns a file: a delivery never writes over a newer delivery's write or a human's
commit, and a rollback never restores a file someone else has written since.

```
aicd: checkout-api 4f2c1d9 prod-use1 setWeight 10

Aicd-Delivery: checkout-api@4f2c1d9e...            (app @ full revision)
Aicd-Delivery-Id: delivery-checkout-api-4f2c1d9e...  (unique per delivery; a re-deploy gets a new one)
Aicd-Started: 2026-12-02T03:34:06.123456+00:00     (the delivery's start: "newer" means started later)
Aicd-Step: production/prod-use1/0-setWeight
Aicd-Actor: aicd
```

`Aicd-Actor` says who caused the commit: `aicd` for aicd itself; for a human's action (the approval that
opened a stage, a resume, an abort's rollback) the person of the spec's `people` and the identity and channel
they acted through, as every view names them (`alice (as U0ALICE via slack)`, aicd.people.describe), so the
value's first word is always the person (`git log -E --grep='^Aicd-Actor: alice( |$)'`). An identity no person
declares is the value alone, as in commits made before there were people.

Lookups always compare whole trailer values, never substrings: `app@4f2c1d9` must not match `app@4f2c1d9e...`.
Commits made before `Aicd-Delivery-Id` existed are matched by their exact `Aicd-Delivery` value and count
as older than any delivery that records its start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DELIVERY = "Aicd-Delivery"
DELIVERY_ID = "Aicd-Delivery-Id"
STARTED = "Aicd-Started"
STEP = "Aicd-Step"
ACTOR = "Aicd-Actor"
KEYS = (DELIVERY, DELIVERY_ID, STARTED, STEP, ACTOR)


def delivery_trailer(app: str, revision: str) -> str:
    return f"{app}@{revision}"


def step_trailer(stage: str, target: str, step: str) -> str:
    """`<stage>/<target>/<step>`: `production/prod-use1/0-setWeight`, `edge/pops/batch-2`, `.../rollback`."""
    return f"{stage}/{target}/{step}"


def split_step(value: str) -> tuple[str, str, str]:
    """An `Aicd-Step` value as (stage, target, step); ValueError for one that is not three parts."""
    stage, target, step = value.split("/", 2)
    return stage, target, step


@dataclass(frozen=True)
class CommitActor:
    """An `Aicd-Actor` value read back: who (a person, an identity, or `aicd`) and, for a person of the spec's
    `people`, the identity and channel they acted through."""

    who: str
    identity: str = ""  # empty: `who` is the identity itself (no person declared it), or aicd
    via: str = ""

    @property
    def person(self) -> str:
        """The spec's person; empty where the value names an identity no person declares (or aicd)."""
        return self.who if self.identity else ""


# An `Aicd-Actor` value as aicd.people.describe writes it: `who`, `who (as IDENTITY)`,
# `who (as IDENTITY via CHANNEL)` or `who (via CHANNEL)`.
_ACTOR = re.compile(
    r"(?P<who>\S+)(?: \((?:as (?P<identity>\S+)(?: via (?P<via>\S+))?|via (?P<channel>\S+))\))?"
)


def parse_actor(value: str) -> CommitActor:
    """An `Aicd-Actor` value as aicd.people.describe wrote it (older commits: the identity alone, or `aicd`); a value
    of another shape is `who` as it stands."""
    found = _ACTOR.fullmatch(value.strip())
    if found is None:
        return CommitActor(value.strip())
    who, channel = found["who"], found["via"] or found["channel"] or ""
    return CommitActor(who, found["identity"] or (who if channel else ""), channel)


@dataclass(frozen=True)
class DeliveryRef:
    """Who a write belongs to: enough to decide ownership from Git alone."""

    app: str
    revision: str
    delivery_id: str = ""  # empty only for deliveries started before delivery IDs went into trailers
    started: str = ""  # ISO 8601 UTC; empty for the same old deliveries

    @property
    def trailer(self) -> str:
        return delivery_trailer(self.app, self.revision)

    def order(self) -> tuple[str, str]:
        """Sort key: started later is newer; the ID breaks a tie so two deliveries never compare equal."""
        return (self.started, self.delivery_id)

    def is_newer_than(self, other: DeliveryRef) -> bool:
        return self.order() > other.order()


@dataclass(frozen=True)
class CommitTrailers:
    delivery: str  # "<app>@<revision>"
    step: str
    actor: str
    delivery_id: str = ""
    started: str = ""

    def owner(self) -> DeliveryRef:
        app, _, revision = self.delivery.rpartition("@")
        return DeliveryRef(app, revision, self.delivery_id, self.started)

    def belongs_to(self, delivery: DeliveryRef) -> bool:
        """Whether this commit was made by `delivery` (exact values; old commits by their delivery trailer)."""
        if self.delivery_id:
            return self.delivery_id == delivery.delivery_id
        return self.delivery == delivery.trailer


def commit_message(subject: str, trailers: CommitTrailers, body: str = "") -> str:
    lines = [f"{DELIVERY}: {trailers.delivery}"]
    if trailers.delivery_id:
        lines.append(f"{DELIVERY_ID}: {trailers.delivery_id}")
    if trailers.started:
        lines.append(f"{STARTED}: {trailers.started}")
    # One line each, whatever a value holds: a line break would end the trailer block git and aicd read.
    lines += [f"{STEP}: {_one_line(trailers.step)}", f"{ACTOR}: {_one_line(trailers.actor)}"]
    middle = f"\n{body.strip()}\n" if body.strip() else ""
    return f"{subject}\n{middle}\n" + "\n".join(lines) + "\n"


def _one_line(value: str) -> str:
    return " ".join(value.split())


def trailer_values(text: str) -> dict[str, str]:
    """The aicd trailers in `git log --format=%(trailers:only,unfold)` output (or a whole message's last
    paragraph), by key (`Aicd-Step` -> value); the first of a repeated key counts."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(": ")
        if separator and key in KEYS and key not in values:
            values[key] = value.strip()
    return values


def parse_trailers(text: str) -> CommitTrailers | None:
    """The aicd trailers of a commit (see trailer_values); None for a commit that is not aicd's."""
    values = trailer_values(text)
    if DELIVERY not in values or STEP not in values:
        return None
    return CommitTrailers(
        delivery=values[DELIVERY],
        step=values[STEP],
        actor=values.get(ACTOR, ""),
        delivery_id=values.get(DELIVERY_ID, ""),
        started=values.get(STARTED, ""),
    )
