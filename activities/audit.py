"""The worker's audit sinks: a JSON-lines file (AICD_AUDIT_FILE) and/or an HTTP endpoint (AICD_AUDIT_URL)
that receives each batch as a CloudEvents JSON batch (`application/cloudevents-batch+json`). Records are
chained (aicd.governance.audit): the file's chain continues from its last line, under an exclusive lock, so
workers sharing the file (a shared volume) keep one chain; without a file the HTTP sink gets this worker
process's own chain. A retried append skips records already in the file (their IDs are stable), so a retry
never writes a record twice. Neither configured: the records go nowhere (`aicd audit` still rebuilds them
from Temporal and Git). The delivery calls `append` as a local activity (workflows.delivery.LOCAL_ACTIVITIES): the
worker running the delivery's workflow task writes to its own sinks, as any worker of the queue did before."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from pathlib import Path

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from aicd.errors import ErrorType
from aicd.governance.audit import GENESIS, AuditEntry, chained, cloud_event, digest

AUDIT_FILE_ENV = "AICD_AUDIT_FILE"
AUDIT_URL_ENV = "AICD_AUDIT_URL"
TAIL_BYTES = 256 * 1024  # how much of the file's end is read for the last hash and recent IDs


def _tail(file: Path) -> tuple[str, dict[str, str]]:
    """The hash of the file's last line and its recent records' lines by ID."""
    with open(file, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - TAIL_BYTES))
        lines = handle.read().decode(errors="replace").splitlines()
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first may be cut
    lines = [line for line in lines if line.strip()]
    if not lines:
        return GENESIS, {}
    by_id = {}
    for line in lines:
        try:
            by_id[str(json.loads(line).get("id"))] = line
        except ValueError:
            continue
    return digest(lines[-1]), by_id


class AuditActivities:
    def __init__(self) -> None:
        self.previous = GENESIS  # this process's chain, for an HTTP sink without a file

    @activity.defn(name="audit_append")
    async def append(self, entries: list[AuditEntry]) -> int:
        file = os.environ.get(AUDIT_FILE_ENV)
        url = os.environ.get(AUDIT_URL_ENV)
        records = [cloud_event(entry) for entry in entries]
        if not records or not (file or url):
            return 0
        if file:
            lines = await asyncio.to_thread(self._append_file, Path(file), records)
        else:
            lines = chained(records, self.previous)
            if lines:
                self.previous = digest(lines[-1])
        if url and lines:
            body = ("[" + ",".join(lines) + "]").encode()
            try:
                async with httpx.AsyncClient(timeout=10.0) as http:
                    response = await http.post(
                        url, content=body, headers={"Content-Type": "application/cloudevents-batch+json"}
                    )
            except httpx.HTTPError as error:
                raise ApplicationError(
                    f"audit sink unreachable: {error}", type=ErrorType.AUDIT_SINK_UNAVAILABLE
                ) from None
            if not 200 <= response.status_code < 300:
                raise ApplicationError(
                    f"audit sink answered {response.status_code}", type=ErrorType.AUDIT_SINK_UNAVAILABLE
                )
        return len(lines)

    def _append_file(self, file: Path, records: list[dict[str, object]]) -> list[str]:
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(file, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                previous, seen = _tail(file)
                fresh = [record for record in records if str(record["id"]) not in seen]
                written = dict(
                    zip((str(record["id"]) for record in fresh), chained(fresh, previous), strict=True)
                )
                for line in written.values():
                    handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        # A retry after the file took the batch but the HTTP sink did not: the sink gets the same lines.
        return [written.get(str(record["id"])) or seen[str(record["id"])] for record in records]
