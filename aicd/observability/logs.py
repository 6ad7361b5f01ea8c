"""Log lines of aicd processes: plain text for a terminal, or one JSON object per line for a log pipeline.

A filter on the handler adds the delivery ID, app, stage and target to every record logged while an
activity runs - through `activity.logger` or any module logger, in the activity's task or in the thread it
hands blocking work to - from the context the metrics interceptor sets (aicd.observability.context). Records
of `workflow.logger`, and the SDK's own records about an activity, carry the workflow's ID, from which the
same fields are read. No log call changes.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from aicd.observability import context as delivery_context
from aicd.redact import RedactingFormatter, SecretMask, process_mask, redact, watch_configured_secret_files

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("delivery_id", "app", "stage", "target")
# Fields of the SDK's `temporal_activity` / `temporal_workflow` extras worth a JSON key of their own.
_TEMPORAL_FIELDS = (
    "activity_type",
    "activity_id",
    "attempt",
    "workflow_id",
    "workflow_type",
    "run_id",
    "task_queue",
)


class DeliveryContextFilter(logging.Filter):
    """Adds the delivery context fields to each record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = delivery_context.CURRENT.get()
        for extra in ("temporal_activity", "temporal_workflow"):  # the SDK's own records, workflow.logger's
            details = getattr(record, extra, None)
            if current is None and isinstance(details, dict) and details.get("workflow_id"):
                current = delivery_context.from_workflow_id(str(details["workflow_id"]))
        for key, value in (current.fields() if current is not None else {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, mask: SecretMask | None = None) -> None:
        super().__init__()
        self._mask = mask if mask is not None else process_mask()

    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, the delivery context, the
    Temporal activity/workflow identity when there is one, and the traceback as `error`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage(), self._mask),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        for extra in ("temporal_activity", "temporal_workflow"):
            details = getattr(record, extra, None)
            if isinstance(details, dict):
                entry.update(
                    {key: details[key] for key in _TEMPORAL_FIELDS if details.get(key) not in (None, "")}
                )
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info), self._mask)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", log_format: str = "text") -> None:
    """Replace the root logger's handlers with one on stderr in `log_format` (text | json); every line is
    redacted (URL credentials, this process's secret values, the secrets it reads by name: aicd.redact)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    watch_configured_secret_files()  # the secret files this process hands to git, ssh and Temporal
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else RedactingFormatter(TEXT_FORMAT))
    handler.addFilter(DeliveryContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # The SDK's loggers append the activity/workflow info to the message text; JSON has it as keys already.
    from temporalio import activity, workflow

    activity.logger.activity_info_on_message = log_format != "json"
    workflow.logger.workflow_info_on_message = log_format != "json"
