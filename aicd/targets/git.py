"""Target kind `git`: commit only. Flux or an auto-syncing Argo CD applies the commit; health is the commit
having landed on the branch, and the analysis steps judge the release."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from aicd.targets.base import TargetKind


@dataclass(frozen=True)
class GitTarget(TargetKind):
    kind: Literal["git"] = "git"

    name: ClassVar[str] = "git"
    description: ClassVar[str] = "git: commit only (Flux or auto-sync applies it)"
