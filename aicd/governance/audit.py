"""The audit trail: every state change and human action of a delivery as a CloudEvent (1.0, JSON), in an
append-only stream whose records are chained: each carries `aicdprevhash`, the SHA-256 of the previous
record's line as written (64 zeros for the first), so changing, removing or reordering any record of an
exported file breaks the chain at that line (`verify`).

Record types (`type`), each with `subject` = the delivery ID and `time` = when it happened:
- dev.aicd.delivery.started   data: trigger (source, actor, branch), revision, artifact
- dev.aicd.delivery.phase     data: phase, stage
- dev.aicd.delivery.action    data: kind (approve, pause, override, break-glass, ...), actor, reason, stage, via,
                              and person when the spec's `people` declares the actor's identity
- dev.aicd.delivery.finished  data: phase, reason
- dev.aicd.delivery.commit    data: sha, step, actor (reconstructed from Git trailers by `aicd audit`); a
                              commit whose Aicd-Actor names a person: actor (the identity), via, person
- dev.aicd.delivery.rollback  data: targets, reason (reconstructed from the history)

The worker writes the first four as they happen (aicd.activities.audit); `aicd audit` rebuilds all of them
for any past delivery from its Temporal history and the GitOps repository's trailers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64
PREV_HASH = "aicdprevhash"  # a CloudEvents extension attribute: lower-case letters and digits only
TYPE_PREFIX = "dev.aicd.delivery."
STREAMED_TYPES = frozenset({"started", "phase", "action", "finished"})


@dataclass
class AuditEntry:
    """One fact before it becomes a CloudEvent (the workflow makes these; time from workflow.now())."""

    kind: str  # started | phase | action | finished | commit | rollback
    delivery_id: str
    app: str
    at: str
    seq: int  # its position in the delivery's stream: with the delivery ID, the event's stable ID
    data: dict[str, Any] = field(default_factory=dict)


def cloud_event(entry: AuditEntry) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{entry.delivery_id}/{entry.kind}/{entry.seq}",
        "source": f"aicd/{entry.app}",
        "type": TYPE_PREFIX + entry.kind,
        "subject": entry.delivery_id,
        "time": entry.at,
        "datacontenttype": "application/json",
        "data": entry.data,
    }


def line_of(record: dict[str, Any]) -> str:
    """A record's line as written (the hash covers exactly these bytes)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def chained(records: list[dict[str, Any]], previous: str = GENESIS) -> list[str]:
    """The records as lines of a chain that continues after a line whose hash is `previous`."""
    lines = []
    for record in records:
        line = line_of({**record, PREV_HASH: previous})
        lines.append(line)
        previous = digest(line)
    return lines


def verify(lines: list[str]) -> list[str]:
    """Problems of a chain, each naming its line (1-based); empty: intact."""
    problems = []
    previous = GENESIS
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"line {number}: not JSON")
            previous = digest(line)
            continue
        if record.get(PREV_HASH) != previous:
            problems.append(
                f"line {number}: {PREV_HASH} {str(record.get(PREV_HASH))[:12]}... does not match the previous"
                f" line's hash {previous[:12]}...: a record before it was changed, removed or inserted"
            )
        if line != line_of(record):
            problems.append(f"line {number}: not in canonical form (edited by hand?)")
        previous = digest(line)
    return problems


def comparable(record: dict[str, Any]) -> tuple[str, str, str]:
    """What a streamed record and its reconstruction agree on: type, subject, data (without times)."""
    return record["type"], record["subject"], json.dumps(record["data"], sort_keys=True)
