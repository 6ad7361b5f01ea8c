"""The target drivers, one per target kind that is not a fleet (aicd.targets): the one list of them."""

from __future__ import annotations

from aicd.activities.drivers.argocd import ArgoCDDriver
from aicd.activities.drivers.base import TargetDriver
from aicd.activities.drivers.git import GitDriver
from aicd.activities.drivers.local import LocalDriver
from aicd.kinds import KindRegistry

DRIVERS: KindRegistry[TargetDriver] = KindRegistry(
    "target driver",
    [
        GitDriver(),
        ArgoCDDriver(),
        LocalDriver(),
    ],
)


def driver_for(kind: str) -> TargetDriver:
    return DRIVERS[kind]
