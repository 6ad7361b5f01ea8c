"""Target kind `local`: the embedded reconciler (`aicd dev`, `aicd demo`) runs the committed versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aicd.targets.base import TargetKind


@dataclass(frozen=True)
class LocalTarget(TargetKind):
    reconciler: str | None = None  # its URL; None: $AICD_RECONCILER_URL
    kind: Literal["local"] = "local"

    name: ClassVar[str] = "local"
    description: ClassVar[str] = "local: the embedded reconciler"
    properties: ClassVar[dict[str, Any]] = {
        "reconciler": {
            "type": "string",
            "pattern": "^https?://",
            "description": "URL of the embedded reconciler (default from AICD_RECONCILER_URL).",
        },
    }
